"""The I/O layer between the CLI and the Editor: read inputs, check outputs, run, write.

Every check that needs no model (files, prompts, words, outputs) runs before the model is
loaded, so a bad invocation fails in milliseconds; every output is written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from . import batch, download
from .attention import check_attention_request
from .compiling import check_toolchain
from .editor import EditJob, Editor, Inversion
from .errors import IcdEditError, InputError, OutputError, UsageError
from .files import check_output, remove_stale_temp_files, slug
from .images import check_size, image_format, load_image, save_image, side_by_side
from .latents import LatentFile, check_same_model, is_latent_file, load_latent, save_latent, size_text
from .loader import MissingWeightsError, load_model, resolve_device, resolve_dtype
from .metrics import psnr, ssim
from .preparation import explicit, prepare_edit, resolve_settings
from .presets import check_number, check_seed, load_preset
from .specs import ModelSpec, resolve_model
from .text import check_prompt, truncation_warning


class Reporter:
    """Progress and notes for the person at the terminal; silent by default (library use).

    `confirm(question)` asks the person (the CLI only does so on an interactive terminal);
    without it, nothing is ever downloaded implicitly."""

    def __init__(
        self, progress=None, note: Callable[[str], None] | None = None, confirm: Callable[[str], bool] | None = None
    ):
        self.progress = progress
        self._note = note
        self._confirm = confirm

    def confirm(self, question: str) -> bool:
        return bool(self._confirm and self._confirm(question))

    def bytes_progress(self) -> Callable[[str, int, int | None], None]:
        """A progress callback for downloads: one line per file."""
        tasks: dict[str, object] = {}

        def update(name: str, done: int, total: int | None) -> None:
            if self.progress is None:
                return
            if name not in tasks:
                tasks[name] = self.progress.add_task(f"downloading {name}", total=total)
            self.progress.update(tasks[name], completed=done, total=total)

        return update

    def note(self, message: str) -> None:
        if self._note is not None:
            self._note(message)

    def stage(self, description: str, total: int | None) -> Callable[[], None]:
        """Start a progress line; the returned callable advances it by one."""
        if self.progress is None:
            return lambda: None
        task = self.progress.add_task(description, total=total)
        return lambda: self.progress.advance(task)


def load_editor(
    spec: ModelSpec,
    device: str,
    dtype: str,
    reporter: Reporter,
    cuda_graphs: bool = False,
    compile: bool = False,
    attention: str = "auto",
) -> Editor:
    torch_device = resolve_device(device)
    resolve_dtype(dtype, torch_device)  # a bad --device/--dtype/--attention fails before anything else
    check_attention_request(attention)
    if cuda_graphs and torch_device.type != "cuda":
        reporter.note(f"note: --cuda-graphs needs a CUDA device; running eagerly on {torch_device}")
    if compile:
        check_toolchain(torch_device)
        reporter.note("note: --compile: the first item of each size compiles the model (minutes), later ones reuse it")
        if torch_device.type == "cpu":
            reporter.note("note: on the CPU, compiled runs were measured slower than plain ones (docs/benchmarks.md)")
    if spec.random_weights:
        reporter.note(f"note: model {spec.name!r} has random weights: its images are noise (it checks an installation)")

    def build() -> Editor:
        bundle = load_model(spec, device=device, dtype=dtype, attention=attention)
        return Editor(bundle, cuda_graphs=cuda_graphs, compile=compile)

    try:
        loaded = reporter.stage(f"loading {spec.name}", 1)
        editor = build()
        loaded()
        return editor
    except MissingWeightsError as exc:
        size = download.missing_download_bytes(spec) / 1e9
        if not reporter.confirm(
            f"{exc.message}. Download what model {spec.name!r} is missing (about {size:.1f} GB) now?"
        ):
            raise
    run_download(DownloadRequest(spec.name if spec.path is None else str(spec.path), dtype), reporter)
    return build()


def default_output(path: Path, overwrite: bool) -> Path:
    """A default name never overwrites: without --overwrite, -2, -3, ... are appended."""
    if overwrite or not path.exists():
        return path
    n = 2
    while (candidate := path.with_name(f"{path.stem}-{n}{path.suffix}")).exists():
        n += 1
    return candidate


def _warn_truncation(editor: Editor, prompts: list[str], reporter: Reporter) -> None:
    for prompt in dict.fromkeys(prompts):
        message = truncation_warning(editor.tokenizer, prompt)
        if message:
            reporter.note(f"warning: {message}")


def _latent_metadata(spec: ModelSpec, inversion: Inversion, source: Path | None) -> dict[str, str]:
    meta = {
        **spec.identity(),
        "reverse_timesteps": ",".join(map(str, spec.reverse_timesteps)),
        "prompt": inversion.prompt,
        "seed": str(inversion.seed),
        "processed_size": size_text(inversion.processed_size),
        "original_size": size_text(inversion.original_size),
    }
    if spec.path is not None:
        meta["model_path"] = str(spec.path.resolve())
    if source is not None:
        meta["source_image"] = source.name
    return meta


def _spec_for_latent(latent: LatentFile, model: str | None) -> ModelSpec:
    """An explicit --model wins; else the model that wrote the latent file."""
    if model:
        return resolve_model(model)
    recorded = latent.metadata.get("model_path")
    if recorded and Path(recorded).is_file():
        return resolve_model(recorded)
    return resolve_model(latent.metadata.get("model"))


def _inversion_from_latent(latent: LatentFile, prompt: str | None) -> Inversion:
    if latent.latent.shape[0] != 1:
        raise InputError(
            "the latent file holds final latents of an edit, not an inversion", "use a file written by `icdedit invert`"
        )
    return Inversion(
        latent.latent,
        prompt or latent.prompt,
        int(latent.metadata.get("seed", 0)),
        latent.processed_size,
        latent.original_size,
    )


# -- invert ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class InvertRequest:
    image: Path
    prompt: str
    model: str | None = None
    seed: int = 0
    size: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    output: Path | None = None
    overwrite: bool = False
    attention: str = "auto"  # fused attention kernel: auto, sdpa or xformers


def run_invert(request: InvertRequest, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    check_prompt(request.prompt)
    check_seed(request.seed)
    check_size(request.size)
    image = load_image(request.image)
    output = request.output or default_output(Path(f"{request.image.stem}.safetensors"), request.overwrite)
    if output.suffix.lower() != ".safetensors":
        raise OutputError(f"latent output {output} must end in .safetensors", "e.g. -o photo.safetensors")
    check_output(output, request.overwrite, inputs=(request.image,))
    spec = resolve_model(request.model)
    editor = load_editor(spec, request.device, request.dtype, reporter, attention=request.attention)
    _warn_truncation(editor, [request.prompt], reporter)
    step = reporter.stage("inverting", spec.plan().num_forward_steps)
    inversion = editor.invert(image, request.prompt, request.seed, request.size, on_step=step)
    save_latent(output, inversion.latent, _latent_metadata(spec, inversion, request.image))
    return {
        "command": "invert",
        "output": str(output),
        "model": spec.name,
        "prompt": request.prompt,
        "seed": request.seed,
        "latent_shape": list(inversion.latent.shape),
        "processed_size": list(inversion.processed_size),
        "original_size": list(inversion.original_size),
    }


# -- reconstruct -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReconstructRequest:
    source: Path
    prompt: str | None = None
    model: str | None = None
    seed: int = 0
    guidance: float = 0.0
    tau: float = 0.8
    size: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    output: Path | None = None
    overwrite: bool = False
    attention: str = "auto"  # fused attention kernel: auto, sdpa or xformers


@dataclass
class _Source:
    """A photo or a latent file, read and checked before any model is loaded."""

    spec: ModelSpec
    prompt: str
    image: object | None = None
    latent: LatentFile | None = None
    notes: list[str] = field(default_factory=list)


def _read_source(path: Path, prompt: str | None, model: str | None, what: str) -> _Source:
    if is_latent_file(path):
        latent = load_latent(path)
        spec = _spec_for_latent(latent, model)
        check_same_model(latent, spec.identity(), path)
        return _Source(spec, check_prompt(prompt or latent.prompt, what), latent=latent)
    image = load_image(path)
    if prompt is None:
        raise InputError(f"a prompt describing {path.name} is needed", f"pass --{what} 'a photo of ...'")
    return _Source(resolve_model(model), check_prompt(prompt, what), image=image)


def _invert_source(editor: Editor, source: _Source, seed: int, size: int | None, reporter: Reporter) -> Inversion:
    """The inversion of a photo, or the one a latent file holds (no model evaluation then)."""
    if source.latent is not None:
        return _inversion_from_latent(source.latent, source.prompt)
    step = reporter.stage("inverting", source.spec.plan().num_forward_steps)
    return editor.invert(source.image, source.prompt, seed, size, on_step=step)


def run_reconstruct(request: ReconstructRequest, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    check_number("guidance", request.guidance, "--guidance")
    check_number("tau", request.tau, "--tau")
    check_seed(request.seed)
    check_size(request.size)
    source = _read_source(request.source, request.prompt, request.model, "prompt")
    output = request.output or default_output(Path(f"{request.source.stem}-reconstruction.png"), request.overwrite)
    image_format(output)
    check_output(output, request.overwrite, inputs=(request.source,))
    editor = load_editor(source.spec, request.device, request.dtype, reporter, attention=request.attention)
    _warn_truncation(editor, [source.prompt], reporter)
    inversion = _invert_source(editor, source, request.seed, request.size, reporter)
    step = reporter.stage("decoding", source.spec.plan().num_reverse_steps)
    image, _ = editor.reconstruct(inversion, request.guidance, request.tau, on_step=step)
    save_image(image, output)
    result = {
        "command": "reconstruct",
        "output": str(output),
        "model": source.spec.name,
        "prompt": source.prompt,
        "seed": inversion.seed,
        "guidance": request.guidance,
        "tau": request.tau,
        "size": list(image.size),
    }
    if source.image is not None:
        result.update(psnr=round(psnr(source.image, image), 4), ssim=round(ssim(source.image, image), 5))
    return result


# -- edit ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EditRequest:
    source: Path
    targets: list[str]
    src: str | None = None
    model: str | None = None
    preset: str | None = None
    seed: int = 0
    overrides: dict = field(default_factory=dict)
    blend: list[tuple[str, str]] | None = None
    no_blend: bool = False
    amplify: list[tuple[str, float]] | None = None
    save_latent: Path | None = None
    side_by_side: bool = False
    size: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    output: Path | None = None
    overwrite: bool = False
    attention: str = "auto"  # fused attention kernel: auto, sdpa or xformers


def edit_outputs(request: EditRequest) -> list[Path]:
    """One image per target: -o as given for one target, else -o's stem plus the target's slug."""
    stem = request.source.stem
    if request.output is None:
        paths = [Path(f"{stem}-{slug(t)}.png") for t in request.targets]
        return [default_output(p, request.overwrite) for p in paths]
    if len(request.targets) == 1:
        return [request.output]
    out = request.output
    return [out.with_name(f"{out.stem}-{i + 1}-{slug(t)}{out.suffix}") for i, t in enumerate(request.targets)]


def run_edit(request: EditRequest, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    check_seed(request.seed)
    check_size(request.size)
    chosen = load_preset(request.preset) if request.preset else None
    for target in request.targets:
        check_prompt(target, "tgt")
    source = _read_source(request.source, request.src, request.model or (chosen and chosen.model), "src")
    settings = resolve_settings(source.spec, chosen, request.overrides)
    prepared = prepare_edit(
        source.spec,
        source.prompt,
        request.targets,
        settings,
        amplify=request.amplify,
        blend=request.blend,
        no_blend=request.no_blend,
        given=explicit(request.overrides),
    )
    targets = list(prepared.targets)
    outputs = edit_outputs(request)
    extra = []
    if request.side_by_side:
        first = outputs[0]
        extra.append(default_output(first.with_name(f"{first.stem}-side-by-side{first.suffix}"), request.overwrite))
    if request.save_latent is not None:
        if request.save_latent.suffix.lower() != ".safetensors":
            raise OutputError(f"--save-latent {request.save_latent} must end in .safetensors")
        extra.append(request.save_latent)
    all_outputs = outputs + extra
    if len(set(map(str, all_outputs))) != len(all_outputs):
        raise OutputError("two outputs would have the same name", "give distinct target prompts or -o names")
    for path in all_outputs:
        if path.suffix.lower() != ".safetensors":
            image_format(path)
        check_output(path, request.overwrite, inputs=(request.source,))
    for target in targets:
        if target == source.prompt:
            reporter.note(f"warning: source and target prompts are identical ({target!r}): this is a reconstruction")
    for target, w in zip(targets, prepared.words):
        prefix = "derived" if w.derived else "using"
        reporter.note(f"{prefix} for {target!r}: {w.describe()}")

    editor = load_editor(source.spec, request.device, request.dtype, reporter, attention=request.attention)
    _warn_truncation(editor, [source.prompt, *targets], reporter)
    inversion = _invert_source(editor, source, request.seed, request.size, reporter)
    step = reporter.stage("editing", source.spec.plan().num_reverse_steps)
    decode_source = request.side_by_side and source.image is None
    result = editor.edit_many([EditJob.prepared(inversion, prepared)], decode_source=decode_source, on_step=step)[0]
    for image, path in zip(result.targets, outputs):
        save_image(image, path)
    report = {
        "command": "edit",
        "outputs": [str(p) for p in outputs],
        "model": source.spec.name,
        "src": source.prompt,
        "targets": targets,
        "seed": inversion.seed,
        "settings": settings.as_dict(),
        "words": [
            {
                "mode": w.mode,
                "amplify": dict(w.amplify),
                "blend": [list(w.blend_source), list(w.blend_target)],
                "derived": w.derived,
            }
            for w in result.words
        ],
        "size": list(result.targets[0].size),
    }
    if request.side_by_side:
        original = source.image if source.image is not None else result.source
        save_image(side_by_side([original, *result.targets]), extra[0])
        report["side_by_side"] = str(extra[0])
    if request.save_latent is not None:
        meta = _latent_metadata(source.spec, inversion, request.source if source.image is not None else None)
        meta["targets"] = " | ".join(targets)
        with_source = result.latents.shape[0] > len(targets)  # SDXL decodes the source row only on demand
        meta["rows"] = "source, targets" if with_source else "targets"
        save_latent(request.save_latent, result.latents, meta)
        report["latent"] = str(request.save_latent)
    return report


# -- batch -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BatchRequest:
    inputs: list[str]
    images: Path | None = None
    out: Path = Path("edits")
    model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    size: int | None = None
    shard: str | None = None
    overwrite: bool = False
    side_by_side: bool = False
    cuda_graphs: bool = False
    compile: bool = False
    batch_size: int = 1
    defaults: dict = field(default_factory=dict)
    attention: str = "auto"  # fused attention kernel: auto, sdpa or xformers


def batch_items(request: BatchRequest, spec: ModelSpec | None = None) -> tuple[list[batch.BatchItem], str | None]:
    """Every item of the input, before any model: problems of the input as a whole raise
    ManifestError (all at once); a row's own problem is kept on its item, to be recorded."""
    p2p = spec is None or spec.traits.attention_control
    defaults = batch.BatchDefaults(**request.defaults, model=spec)
    first = Path(request.inputs[0])
    problems = []
    if request.images is not None and not request.images.is_dir():
        problems.append(f"--images folder {request.images} does not exist")
    if len(request.inputs) == 1 and first.suffix.lower() in batch.MANIFEST_SUFFIXES:
        if not first.is_file():
            raise batch.ManifestError([f"manifest not found: {first}", *problems])
        try:
            rows = batch.read_manifest(first)
        except batch.ManifestError as exc:
            raise batch.ManifestError([*exc.problems, *problems]) from None
        root = request.images or first.parent
    else:
        if request.images is not None:
            raise batch.ManifestError(["--images is for manifests; give image files or folders directly"])
        rows = [{"image": str(p)} for p in batch.expand_images(request.inputs)]
        root = Path(".")
    if not rows:
        raise batch.ManifestError([f"no items in {', '.join(request.inputs)}"])
    problems += batch.column_problems(rows, defaults)
    if problems:
        raise batch.ManifestError(problems)
    if not p2p and any(not batch.is_blank(row.get(k)) for row in rows for k in ("blend", "amplify")):
        note = (
            f"note: the manifest's blend/amplify columns are not used: {spec.name} ({spec.traits.label}) editing "
            "switches prompts, with no attention control"
        )
    else:
        note = None
    return batch.build_items(rows, root, request.out, defaults), note


def run_batch(request: BatchRequest, reporter: Reporter | None = None) -> tuple[batch.Summary, Path]:
    reporter = reporter or Reporter()
    if request.batch_size < 1:
        raise batch.ManifestError([f"--batch-size {request.batch_size} must be at least 1"])
    check_seed(request.defaults.get("seed", 0))
    check_size(request.size)
    if request.defaults.get("bad_blend", "fail") not in batch.BAD_BLEND_CHOICES:
        raise UsageError(
            f"--bad-blend {request.defaults['bad_blend']!r} is not one of {', '.join(batch.BAD_BLEND_CHOICES)}"
        )
    if request.defaults.get("preset"):
        load_preset(request.defaults["preset"])  # a bad --preset is the command line's problem, not each row's
    try:
        spec = resolve_model(request.model)
    except IcdEditError:
        batch_items(request)  # an unusable manifest is the first thing to report
        raise
    flags = request.defaults.get("overrides", {})
    amplify, blend = request.defaults.get("amplify"), request.defaults.get("blend")
    if not spec.traits.attention_control and (explicit(flags) or amplify or blend):  # the flags' own problem
        prepare_edit(spec, "-", ["-"], resolve_settings(spec), amplify=amplify, blend=blend, given=explicit(flags))
    items, note = batch_items(request, spec)
    if note:
        reporter.note(note)
    shard = batch.parse_shard(request.shard) or batch.distributed_shard()
    device = request.device
    if shard is not None and device == "auto" and os.environ.get("LOCAL_RANK") is not None:
        import torch

        if torch.cuda.is_available():  # one GPU per rank under torchrun / accelerate launch
            device = f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    items = batch.take_shard(items, shard)
    request.out.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(request.out)
    name = "results.jsonl" if shard is None else f"results-shard-{shard[0]}-of-{shard[1]}.jsonl"
    report = batch.Report(request.out / name)
    editors: list[Editor] = []

    def get_editor() -> Editor:  # loaded on first need: a run with nothing to do loads nothing
        if not editors:
            editors.append(
                load_editor(
                    spec, device, request.dtype, reporter, request.cuda_graphs, request.compile, request.attention
                )
            )
        return editors[0]

    advance = reporter.stage("editing", len(items))

    def on_item(item: batch.BatchItem, outcome: str) -> None:
        advance()
        if outcome == "failed":
            reporter.note(f"item {item.number} ({item.image.name}) failed: {report.records[item.number]['error']}")

    summary = batch.run_items(
        items,
        report,
        get_editor,
        overwrite=request.overwrite,
        batch_size=request.batch_size,
        side_by_side_images=request.side_by_side,
        size=request.size,
        on_item=on_item,
    )
    return summary, report.path


# -- models and download ---------------------------------------------------------------------------
def models_report() -> list[dict]:
    """Every known model with, for each part, whether it is on disk, its size and its path."""
    from .specs import DEFAULT_MODEL, builtin_specs

    report = []
    for spec in sorted(builtin_specs().values(), key=lambda s: (s.name != DEFAULT_MODEL, s.name)):
        parts = download.model_status(spec)
        report.append(
            {
                "model": spec.name,
                "description": spec.description,
                "ready": all(p.present for p in parts),
                "parts": [
                    {
                        "part": p.part,
                        "present": p.present,
                        "size_bytes": p.size_bytes,
                        "location": p.location,
                        "source": p.source,
                    }
                    for p in parts
                ],
                "download_bytes": download.missing_download_bytes(spec),
                "download_command": download.download_command(spec),
            }
        )
    return report


@dataclass(frozen=True)
class DownloadRequest:
    model: str
    dtype: str = "fp32"


def run_download(request: DownloadRequest, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    spec = resolve_model(request.model)
    if spec.random_weights:
        return {"command": "download", "model": spec.name, "placed": [], "note": "built locally, nothing to download"}
    placed = download.download_icd_files(spec, progress=reporter.bytes_progress())
    base = download.download_base(spec, "fp16" if request.dtype == "fp16" else "fp32")
    return {"command": "download", "model": spec.name, "placed": [str(p) for p in placed], "base": str(base)}
