"""`icdedit generate`: text to image with the reverse model, for one prompt or a prompt file.

Numerics as the official generation scripts (docs/numerics.md section 8), except that every
image has its own seed: `--num N` gives seeds S, S+1, ..., each image's seed is in its file
and in the report, and any one image can be made again alone. `--save-noise` writes the start
noise as `icdedit invert` writes an inversion, so `icdedit edit noise.safetensors --tgt ...`
edits the generated image from its own noise (no inversion error).

A prompt file runs like `batch`, through the same runner (`runner.py`): one model load,
`results.jsonl` appended after each item and resumed from, failures recorded, shards, exit
codes 0 / 1 / 2. This module supplies only the per-group work and the per-item record.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from .editor import Editor, Generation
from .errors import IcdEditError, OutputError, UsageError
from .files import check_output, distinct_paths, slug
from .images import check_size, image_format, save_image
from .latents import save_latent
from .loader import resolve_device, resolve_dtype
from .manifests import distributed_shard, parse_shard, take_shard
from .naming import default_output
from .presets import SEED_MAX, check_number, check_seed
from .ray_engine import EngineOptions, engine_for
from .records import dtype_name, image_record, model_record, record_text, run_record
from .reporting import Reporter
from .rows import PromptFileError, read_prompts
from .run_context import RunOptions, load_editor, warn_truncation
from .runner import Report, Summary, run_many
from .schedule import GENERATION_GUIDANCE, GENERATION_TAU
from .sources import latent_metadata
from .specs import ModelSpec, resolve_model
from .text import check_prompt, truncation_warning


@dataclass(frozen=True)
class GenerationSettings:
    """How every image of one run is generated (checked, sizes resolved for the model)."""

    model: str
    width: int
    height: int
    guidance: float
    tau: float
    dtype: str = "fp32"  # as used (auto resolved): part of what an image is (fp16 and fp32 differ in the last digits)
    decoder: str | None = None  # the preview decoder's label, when it decoded the images (preview.py)

    def as_dict(self) -> dict:
        made = {"model": self.model, "size": [self.width, self.height], "guidance": self.guidance, "tau": self.tau}
        return {**made, "dtype": self.dtype, **({"decoder": self.decoder} if self.decoder else {})}

    def image_text(self, prompt: str, seed: int, editor: Editor, asked_model: str | None) -> dict[str, str]:
        """What an image file records (records.py): enough to make it again."""
        spec = editor.bundle.spec
        record = image_record(
            "generate",
            model=model_record(spec, asked_model),
            seed=seed,
            run=run_record(editor, self.decoder),
            prompt=prompt,
            guidance=self.guidance,
            tau=self.tau,
            settings=self.as_dict(),
            size=[self.width, self.height],
            resolution=spec.resolution,
            steps=spec.plan().num_reverse_steps,
        )
        return record_text(record)


def generation_settings(
    spec: ModelSpec,
    guidance: float | None,
    tau: float | None,
    width: int | None,
    height: int | None,
    reporter: Reporter,
    run: RunOptions,
) -> GenerationSettings:
    """Every image's settings: the official generation defaults under the flags given."""
    guidance = GENERATION_GUIDANCE if guidance is None else check_number("guidance", guidance, "--guidance")
    tau = GENERATION_TAU if tau is None else check_number("tau", tau, "--tau")
    width = check_size(width, "--width") or spec.resolution
    height = check_size(height, "--height") or spec.resolution
    trained = spec.resolution**2
    if not trained / 2 <= width * height <= 2 * trained:
        reporter.note(
            f"note: {spec.name} was trained at about {spec.resolution}x{spec.resolution} pixels; "
            f"{width}x{height} is far from that and may come out worse"
        )
    decoder = run.decoder_label(spec)  # a missing preview decoder fails before anything is run
    dtype = dtype_name(resolve_dtype(run.dtype, resolve_device(run.device)))  # as load_model resolves it
    return GenerationSettings(spec.name, width, height, guidance, tau, dtype, decoder)


def _check_counts(num: int, batch_size: int, seed: int) -> None:
    if num < 1:
        raise UsageError(f"--num {num} must be at least 1", "e.g. --num 4")
    if batch_size < 1:
        raise UsageError(f"--batch-size {batch_size} must be at least 1", "e.g. --batch-size 4")
    check_seed(seed)


def _chunks(values: list, size: int) -> list[list]:
    return [values[i : i + size] for i in range(0, len(values), size)]


def generate_in_batches(
    editor: Editor,
    prompts: list[str],
    seeds: list[int],
    settings: GenerationSettings,
    batch_size: int,
    on_step=None,
) -> list[Generation]:
    """`batch_size` images per UNet batch. With 1 (the default) each image is exactly the one
    its seed gives alone; larger batches equal it to float32 rounding (kernels vary with batch)."""
    size = (settings.width, settings.height)
    made: list[Generation] = []
    for chunk in _chunks(list(zip(prompts, seeds)), batch_size):
        chunk_prompts, chunk_seeds = [p for p, _ in chunk], [s for _, s in chunk]
        made += editor.generate(chunk_prompts, chunk_seeds, size, settings.guidance, settings.tau, on_step)
    return made


# -- one prompt ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class GenerationRun:
    """What every generate run takes, one prompt or a file."""

    model: str | None = None
    seed: int = 0
    num: int = 1
    guidance: float | None = None  # default: the official 7
    tau: float | None = None  # default: 1 (constant guidance)
    width: int | None = None  # default: the model's resolution
    height: int | None = None
    batch_size: int = 1
    overwrite: bool = False
    run: RunOptions = field(default_factory=RunOptions)

    def settings(self, spec: ModelSpec, reporter: Reporter) -> GenerationSettings:
        return generation_settings(spec, self.guidance, self.tau, self.width, self.height, reporter, self.run)


@dataclass(frozen=True)
class GenerateRequest(GenerationRun):
    prompt: str
    output: Path | None = None
    save_latent: Path | None = None
    save_noise: Path | None = None


def named_by_seed(path: Path, seeds: list[int]) -> list[Path]:
    """`path` for one image; for several, each named by its seed (path-seed7, path-seed8, ...,
    before the suffix), so that a file says which seed makes it again."""
    if len(seeds) == 1:
        return [path]
    return [path.with_name(f"{path.stem}-seed{seed}{path.suffix}") for seed in seeds]


def _outputs(request: GenerateRequest, seeds: list[int]) -> tuple[list[Path], list[Path]]:
    """(images, noise files): -o / --save-noise as given for one image, named by seed for
    several; default image names come from the prompt and never overwrite."""
    if request.output is not None:
        images = named_by_seed(request.output, seeds)
    else:
        images = [
            default_output(p, request.overwrite) for p in named_by_seed(Path(f"{slug(request.prompt)}.png"), seeds)
        ]
    noises = named_by_seed(request.save_noise, seeds) if request.save_noise is not None else []
    outputs = images + noises + ([request.save_latent] if request.save_latent is not None else [])
    if not distinct_paths(outputs):
        raise OutputError(
            "two outputs would be the same file", "give -o, --save-noise and --save-latent distinct names"
        )
    for path in images:
        image_format(path)
    for option, path in (("--save-noise", request.save_noise), ("--save-latent", request.save_latent)):
        if path is not None and path.suffix.lower() != ".safetensors":
            raise OutputError(f"{option} {path} must end in .safetensors", f"e.g. {option} fox.safetensors")
    for path in outputs:
        check_output(path, request.overwrite)
    return images, noises


def run_generate(request: GenerateRequest, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    check_prompt(request.prompt, example="icdedit generate 'a photo of a cat', or --prompts FILE")
    _check_counts(request.num, request.batch_size, request.seed)
    seeds = [request.seed + i for i in range(request.num)]
    check_seed(seeds[-1], f"--seed {request.seed} with --num {request.num} reaches")
    spec = resolve_model(request.model)
    settings = request.settings(spec, reporter)
    images, noises = _outputs(request, seeds)
    editor = load_editor(spec, request.run, reporter)
    warn_truncation(editor, [request.prompt], reporter)
    step = reporter.stage("generating", spec.plan().num_reverse_steps * len(_chunks(seeds, request.batch_size)))
    made = generate_in_batches(editor, [request.prompt] * len(seeds), seeds, settings, request.batch_size, step)
    for generation, path in zip(made, images):
        save_image(
            generation.image, path, settings.image_text(request.prompt, generation.noise.seed, editor, request.model)
        )
    for generation, path in zip(made, noises):
        meta = latent_metadata(spec, generation.noise, None, generated=True)
        record = json.loads(
            settings.image_text(request.prompt, generation.noise.seed, editor, request.model)["icdedit"]
        )
        meta["record"] = json.dumps({**record, "image": "start noise"})  # what the noise was generated for
        save_latent(path, generation.noise.latent, meta)
    report = {
        "command": "generate",
        "outputs": [str(p) for p in images],
        "prompt": request.prompt,
        "seeds": seeds,
        **settings.as_dict(),
        "images": [
            {"output": str(path), "seed": seed, **({"noise": str(noises[i])} if noises else {})}
            for i, (path, seed) in enumerate(zip(images, seeds))
        ],
    }
    if request.save_latent is not None:
        import torch

        meta = {**spec.identity(), "prompt": request.prompt, "seeds": ",".join(map(str, seeds)), "rows": "images"}
        save_latent(request.save_latent, torch.cat([g.latent for g in made]), meta)
        report["latent"] = str(request.save_latent)
    if noises:
        report["noise"] = [str(p) for p in noises]
    return report


# -- a prompt file ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenerationItem:
    number: int  # 1-based, in the order of the file's prompts (and copies, with --num)
    prompt: str
    seed: int
    output: Path
    settings: GenerationSettings
    problem: str | None = None  # why it cannot run: recorded as failed

    def describe(self) -> dict:
        return {"prompt": self.prompt, "seed": self.seed, "settings": self.settings.as_dict()}

    @property
    def key(self) -> str:
        data = json.dumps([self.prompt, self.seed, self.settings.as_dict(), str(self.output)])
        return hashlib.sha256(data.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class GenerateFileRequest(GenerationRun):
    prompts: Path
    out: Path = Path("generated")
    shard: str | None = None
    engine: EngineOptions = field(default_factory=EngineOptions)  # --engine ray: the prompts on Ray actors


def _row_seed(cell, base: int) -> tuple[int, str | None]:
    """A row's seed: its seed cell, else `base`; (seed, problem)."""
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return base, None
    try:
        return check_seed(int(str(cell).strip()), "seed"), None
    except (ValueError, IcdEditError):
        return base, f"seed {cell!r} is not a whole number from 0 to 2^63 - 1"


def build_items(
    rows: list[tuple[str, object, str | None]], request: GenerateFileRequest, settings: GenerationSettings
) -> list[GenerationItem]:
    """One item per prompt and copy: item n (1-based) has seed S + n - 1, or its row's seed cell
    plus the copy's index; outputs numbered in that order."""
    digits = max(5, len(str(len(rows) * request.num)))
    tag = "-preview" if settings.decoder else ""  # a preview never replaces a full image in the same folder
    items = []
    for row, (prompt, seed_cell, row_problem) in enumerate(rows):
        for copy in range(request.num):
            number = row * request.num + copy + 1
            seed, problem = _row_seed(seed_cell, request.seed + number - 1 - copy)
            if problem is None and seed + copy > SEED_MAX:
                problem = f"seed {seed + copy} is past 2^63 - 1 (the largest a generator takes)"
            problem = row_problem or problem or (None if prompt else "the prompt is empty")
            output = request.out / f"{number:0{digits}d}-{slug(prompt) if prompt else 'empty'}{tag}.png"
            items.append(GenerationItem(number, prompt, seed + copy, output, settings, problem))
    return items


def run_generate_file(request: GenerateFileRequest, reporter: Reporter | None = None) -> tuple[Summary, Path]:
    reporter = reporter or Reporter()
    _check_counts(request.num, request.batch_size, request.seed)
    shard = parse_shard(request.shard) or distributed_shard()
    engine = engine_for(request.engine, shard, request.run.device, reporter)
    rows = read_prompts(request.prompts)
    if not rows:
        raise PromptFileError(f"{request.prompts}: no prompts in the file")
    spec = resolve_model(request.model)
    settings = request.settings(spec, reporter)
    items = take_shard(build_items(rows, request, settings), shard)
    options = request.run.for_shard(shard)
    work = GenerationWork(request.model)
    summary, path = run_many(
        items,
        work,
        out=request.out,
        shard=shard,
        get_editor=partial(load_editor, spec, options, reporter),
        engine=engine,
        reporter=reporter,
        label="generating",
        batch_size=request.batch_size,
        overwrite=request.overwrite,
    )
    truncated = truncated_in(path, summary.done)
    if truncated:
        reporter.note(
            f"warning: {truncated} prompt(s) were longer than the text encoder takes and were truncated "
            f"(each is noted in {path.name})"
        )
    return summary, path


def truncated_in(report: Path, done: list[int]) -> int:
    """How many of this run's done items record a truncated prompt (wherever they ran)."""
    records = Report(report).records
    return sum(1 for number in done if records.get(number, {}).get("warning"))


class GenerationWork:
    """generate --prompts' part of a run (runner.Work): items of one run share their settings."""

    def __init__(self, asked_model: str | None = None):
        self.asked_model = asked_model  # --model as given, for the images' records

    def load(self, item: GenerationItem) -> None:
        return None

    def group_key(self, item: GenerationItem, loaded, editor) -> str:
        return "all"

    def chunk_key(self, item: GenerationItem) -> str:
        return "all"

    def run(self, editor: Editor, group: list[tuple[GenerationItem, None]]) -> list[Generation]:
        items = [item for item, _ in group]
        prompts, seeds = [i.prompt for i in items], [i.seed for i in items]
        return generate_in_batches(editor, prompts, seeds, items[0].settings, len(items))

    def finish(self, editor: Editor, item: GenerationItem, loaded, generation: Generation) -> dict:
        text = item.settings.image_text(item.prompt, item.seed, editor, self.asked_model)
        save_image(generation.image, item.output, text)
        warning = truncation_warning(editor.tokenizer, item.prompt)
        return {"warning": warning} if warning else {}
