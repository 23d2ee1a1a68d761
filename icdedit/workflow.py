"""The I/O layer between the CLI and the Editor: read inputs, check outputs, run, write.

Every check that needs no model (files, prompts, words, outputs) runs before the model is
loaded, so a bad invocation fails in milliseconds; every output is written atomically.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from . import batch, download, manifests
from .attention import check_attention_request
from .catalog import DownloadRequest, run_download
from .compiling import check_toolchain, keep_compiled_code
from .editor import EditJob, Editor
from .errors import IcdEditError, OutputError, UsageError
from .files import check_output, distinct_paths, make_folder, remove_stale_temp_files, slug
from .grid import Grid, PickRule, check_grid_method, parse_grid, parse_pick, rank
from .images import check_size, contact_sheet, image_format, load_image, plan_size, save_image, side_by_side
from .latents import save_latent
from .loader import MissingWeightsError, load_model, resolve_device, resolve_dtype
from .masks import aspect_note, fit_mask, latent_mask, outline, read_mask
from .metrics import psnr, ssim
from .naming import default_output, edit_outputs
from .paths import weights_home
from .preparation import check_method_options, explicit, generated_noise_defaults, prepare_edit, resolve_settings
from .presets import check_number, check_seed, load_preset
from .preview import decoder_for, load_preview_decoder
from .reporting import Reporter
from .sources import invert_source, latent_metadata, read_source
from .specs import ModelSpec, resolve_model
from .text import check_prompt, truncation_warning


def load_editor(
    spec: ModelSpec,
    device: str,
    dtype: str,
    reporter: Reporter,
    cuda_graphs: bool = False,
    compile: bool = False,
    attention: str = "auto",
    preview: bool = False,
) -> Editor:
    torch_device = resolve_device(device)
    resolve_dtype(dtype, torch_device)  # a bad --device/--dtype/--attention fails before anything else
    check_attention_request(attention)
    decoder = decoder_for(spec.family) if preview else None
    if decoder is not None:
        decoder.require()  # before minutes of loading
        reporter.note(f"note: --preview: decoded by {decoder.name}, fast but approximate: for looking, not for keeping")
    if cuda_graphs and torch_device.type != "cuda":
        reporter.note(f"note: --cuda-graphs needs a CUDA device; running eagerly on {torch_device}")
    if compile:
        cache = keep_compiled_code(weights_home() / "compile-cache")  # before the first compile reads it
        check_toolchain(torch_device)
        kept = f"kept in {cache}" if cache else f"{weights_home()} is not writable: kept in torch's own folder"
        reporter.note(
            "note: --compile: the first item of each size compiles the model (minutes); later items and later runs "
            f"reuse it ({kept})"
        )
        if torch_device.type == "cpu":
            reporter.note("note: on the CPU, compiled runs were measured slower than plain ones (docs/benchmarks.md)")
    if spec.random_weights:
        reporter.note(f"note: model {spec.name!r} has random weights: its images are noise (it checks an installation)")

    def build() -> Editor:
        bundle = load_model(spec, device=device, dtype=dtype, attention=attention)
        fast = None if decoder is None else load_preview_decoder(decoder, bundle.device, bundle.dtype)
        return Editor(bundle, cuda_graphs=cuda_graphs, compile=compile, preview_decoder=fast)

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


def device_for_shard(device: str, shard: tuple[int, int] | None) -> str:
    """`auto` under torchrun / accelerate launch: this rank's own GPU."""
    if shard is not None and device == "auto" and os.environ.get("LOCAL_RANK") is not None:
        import torch

        if torch.cuda.is_available():
            return f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    return device


def warn_truncation(editor: Editor, prompts: list[str], reporter: Reporter) -> None:
    for prompt in dict.fromkeys(prompts):
        message = truncation_warning(editor.tokenizer, prompt)
        if message:
            reporter.note(f"warning: {message}")


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
    warn_truncation(editor, [request.prompt], reporter)
    step = reporter.stage("inverting", spec.plan().num_forward_steps)
    inversion = editor.invert(image, request.prompt, request.seed, request.size, on_step=step)
    save_latent(output, inversion.latent, latent_metadata(spec, inversion, request.image))
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
    guidance: float | None = None  # default: 0, or a generated noise file's own
    tau: float | None = None  # default: 0.8, or a generated noise file's own
    size: int | None = None
    device: str = "auto"
    dtype: str = "auto"
    output: Path | None = None
    overwrite: bool = False
    attention: str = "auto"  # fused attention kernel: auto, sdpa or xformers


def run_reconstruct(request: ReconstructRequest, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    for name in ("guidance", "tau"):
        if getattr(request, name) is not None:
            check_number(name, getattr(request, name), f"--{name}")
    check_seed(request.seed)
    check_size(request.size)
    source = read_source(request.source, request.prompt, request.model, "prompt")
    guidance = request.guidance if request.guidance is not None else source.generated.get("guidance", 0.0)
    tau = request.tau if request.tau is not None else source.generated.get("tau", 0.8)
    output = request.output or default_output(Path(f"{request.source.stem}-reconstruction.png"), request.overwrite)
    image_format(output)
    check_output(output, request.overwrite, inputs=(request.source,))
    editor = load_editor(source.spec, request.device, request.dtype, reporter, attention=request.attention)
    warn_truncation(editor, [source.prompt], reporter)
    inversion = invert_source(editor, source, request.seed, request.size, reporter)
    step = reporter.stage("decoding", source.spec.plan().num_reverse_steps)
    image, _ = editor.reconstruct(inversion, guidance, tau, on_step=step)
    save_image(image, output)
    result = {
        "command": "reconstruct",
        "output": str(output),
        "model": source.spec.name,
        "prompt": source.prompt,
        "seed": inversion.seed,
        "guidance": guidance,
        "tau": tau,
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
    grid: tuple[str, ...] = ()  # --grid KEY=V1,V2,...: run_edit_grid
    mask: Path | None = None  # where the edit may change the photo (white)
    mask_feather: float = 0.0  # blur radius of the mask's edge, in the photo's pixels
    score: tuple[str, ...] = ()  # with a grid: score each cell with these `eval` metrics
    pick: str | None = None  # with a grid: write the best cell under this rule as the output
    preview: bool = False  # decode with the fast, approximate preview decoder (preview.py)


def run_edit(request: EditRequest, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    check_seed(request.seed)
    check_size(request.size)
    chosen = load_preset(request.preset) if request.preset else None
    for target in request.targets:
        check_prompt(target, "tgt")
    source = read_source(request.source, request.src, request.model or (chosen and chosen.model), "src")
    _check_preview(request, source.spec)
    settings = resolve_settings(source.spec, chosen, _with_generation_defaults(request, chosen, source, reporter))
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
    outputs = edit_outputs(request.source, request.targets, request.output, request.overwrite)
    extra = []
    if request.side_by_side:
        first = outputs[0]
        extra.append(default_output(first.with_name(f"{first.stem}-side-by-side{first.suffix}"), request.overwrite))
    if request.save_latent is not None:
        if request.save_latent.suffix.lower() != ".safetensors":
            raise OutputError(f"--save-latent {request.save_latent} must end in .safetensors")
        extra.append(request.save_latent)
    all_outputs = outputs + extra
    if not distinct_paths(all_outputs):
        raise OutputError("two outputs would have the same name", "give distinct target prompts or -o names")
    for path in all_outputs:
        if path.suffix.lower() != ".safetensors":
            image_format(path)
        check_output(path, request.overwrite, inputs=(request.source,))
    mask = _edit_mask(request, source, reporter)
    for target in targets:
        if target == source.prompt:
            reporter.note(f"warning: source and target prompts are identical ({target!r}): this is a reconstruction")
    for target, w in zip(targets, prepared.words):
        prefix = "derived" if w.derived else "using"
        reporter.note(f"{prefix} for {target!r}: {w.describe()}")

    editor = load_editor(
        source.spec, request.device, request.dtype, reporter, attention=request.attention, preview=request.preview
    )
    warn_truncation(editor, [source.prompt, *targets, *filter(None, [prepared.amplify_prompt])], reporter)
    inversion = invert_source(editor, source, request.seed, request.size, reporter)
    step = reporter.stage("editing", source.spec.plan().num_reverse_steps)
    decode_source = request.side_by_side and source.image is None
    job = EditJob.prepared(inversion, prepared, mask)
    with_latent = request.save_latent is not None  # its rows: source, then targets, for every method
    result = editor.edit_many([job], decode_source=decode_source, source_latent=with_latent, on_step=step)[0]
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
        if mask is not None:
            original = outline(original, fit_mask(mask, original.size))
        save_image(side_by_side([original, *result.targets]), extra[0])
        report["side_by_side"] = str(extra[0])
    if request.save_latent is not None:
        meta = latent_metadata(source.spec, inversion, request.source if source.image is not None else None)
        meta["targets"] = " | ".join(targets)
        meta["rows"] = "source, targets"
        tensors = None
        if mask is not None:  # the latent-space mask the rows were kept to, and where it came from
            meta["mask"] = f"{request.mask.name} (feather {request.mask_feather:g})"
            tensors = {"mask": latent_mask(mask, tuple(result.latents.shape[2:]))}
        save_latent(request.save_latent, result.latents, meta, tensors)
        report["latent"] = str(request.save_latent)
    if mask is not None:
        report["mask"] = str(request.mask)
    return _with_decoder(report, request, source.spec)


def _check_preview(request: EditRequest, spec: ModelSpec) -> None:
    if request.preview:
        decoder_for(spec.family).require()  # before anything else is said or done


def _decoder_entry(request: EditRequest, spec: ModelSpec) -> dict:
    """What a preview's reports and files add: that its images are approximate."""
    return {"decoder": decoder_for(spec.family).label} if request.preview else {}


def _with_decoder(report: dict, request: EditRequest, spec: ModelSpec) -> dict:
    return {**report, **_decoder_entry(request, spec)}


def _edit_mask(request: EditRequest, source, reporter: Reporter):
    """The --mask at the photo's processing size (feathered in the photo's pixels), or None."""
    if request.mask is None:
        return None
    if not (math.isfinite(request.mask_feather) and 0 <= request.mask_feather <= 256):
        raise UsageError(f"--mask-feather {request.mask_feather:g} is out of range", "a radius from 0 to 256 pixels")
    image = read_mask(request.mask)
    if source.image is not None:
        original = source.image.size
        processed = plan_size(*original, request.size or source.spec.resolution, source.spec.traits.size_by_area)
    else:
        original, processed = source.latent.original_size, source.latent.processed_size
    note = aspect_note(image, original, f"the mask {request.mask.name}")
    if note:
        reporter.note(note)
    return fit_mask(image, processed, request.mask_feather * processed[0] / original[0])


def _with_generation_defaults(
    request: EditRequest, chosen, source, reporter: Reporter, also_given: Iterable[str] = ()
) -> dict:
    """Generated noise is edited with Prompt-to-Prompt under its generation's guidance (and tau)
    unless a flag, a grid axis (`also_given`) or a preset says otherwise
    (`preparation.generated_noise_defaults`): a target equal to the prompt is the generated image."""
    overrides = dict(request.overrides)
    if not source.generated or chosen is not None:
        return overrides
    given = set(also_given) | set(explicit(overrides))
    g = source.generated
    defaults = generated_noise_defaults(source.spec, g["guidance"], g["tau"], overrides.get("method"))
    inherited = {k: v for k, v in defaults.items() if k not in given}
    if inherited:
        shown = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in inherited.items())
        reporter.note(
            f"note: editing generated noise ({request.source.name}) with {shown}; --method, --guidance, --tau or "
            "--preset override"
        )
    return {**overrides, **inherited}


# -- edit --grid ------------------------------------------------------------------------------------
def run_edit_grid(request: EditRequest, reporter: Reporter | None = None) -> dict:
    """Every combination of the grid's settings decoded from one inversion, as rows of one UNet
    batch (one by one if that does not fit in memory); each cell's image, and a contact sheet
    with the first axis as columns and the other axes' combinations as rows."""
    reporter = reporter or Reporter()
    check_seed(request.seed)
    check_size(request.size)
    if len(request.targets) != 1:
        raise UsageError("--grid takes one --tgt", "run one grid per target prompt")
    for option, value in (("--save-latent", request.save_latent), ("--side-by-side", request.side_by_side)):
        if value:
            raise UsageError(f"{option} cannot be used with --grid", "a grid writes each cell and a contact sheet")
    target = check_prompt(request.targets[0], "tgt")
    grid = parse_grid(request.grid, explicit(request.overrides))
    chosen = load_preset(request.preset) if request.preset else None
    source = read_source(request.source, request.src, request.model or (chosen and chosen.model), "src")
    _check_preview(request, source.spec)
    overrides = _with_generation_defaults(request, chosen, source, reporter, grid.keys)
    cells = grid.cells()
    labels = ("command line", "--grid")
    settings = [resolve_settings(source.spec, chosen, overrides, cell, labels=labels) for cell in cells]
    check_grid_method(grid, settings[0].method)
    prepared = [
        prepare_edit(
            source.spec,
            source.prompt,
            [target],
            cell_settings,
            amplify=request.amplify,
            blend=request.blend,
            no_blend=request.no_blend,
            given=explicit(request.overrides) + list(cell),
        )
        for cell, cell_settings in zip(cells, settings)
    ]
    metrics, rule = _grid_scoring(request, source)
    if metrics and request.preview:
        reporter.note("note: --preview: the cells are scored on approximate images; make the one you keep without it")
    base = request.output or Path(f"{request.source.stem}-{slug(target)}.png")
    outputs = [base.with_name(f"{base.stem}-{Grid.name_part(cell)}{base.suffix}") for cell in cells]
    sheet = base.with_name(f"{base.stem}-grid-{'-'.join(grid.keys)}{base.suffix}")
    for path in [*outputs, sheet, *([base] if rule else [])]:
        image_format(path)
        check_output(path, request.overwrite, inputs=(request.source,))
    mask = _edit_mask(request, source, reporter)
    for w in prepared[0].words:  # the same words in every cell (an amplify axis scales them)
        reporter.note(f"{'derived' if w.derived else 'using'} for {target!r}: {w.describe()}")

    editor = load_editor(
        source.spec, request.device, request.dtype, reporter, attention=request.attention, preview=request.preview
    )
    warn_truncation(editor, [source.prompt, target, *filter(None, [prepared[0].amplify_prompt])], reporter)
    inversion = invert_source(editor, source, request.seed, request.size, reporter)
    step = reporter.stage(f"editing {len(cells)} cells", source.spec.plan().num_reverse_steps)
    results = _edit_cells(editor, [EditJob.prepared(inversion, edit, mask) for edit in prepared], step)
    for result, edit, path in zip(results, prepared, outputs):
        made = {"settings": edit.settings.as_dict(), **_decoder_entry(request, source.spec)}
        save_image(result.targets[0], path, {"icdedit": json.dumps(made)})
    first, rest = grid.axes[0], Grid(grid.axes[1:])
    row_cells = rest.cells() if rest.axes else [{}]
    by_cell = [r.targets[0] for r in results]  # the first axis varies slowest
    images = [by_cell[c * len(row_cells) + r] for r in range(len(row_cells)) for c in range(len(first[1]))]
    columns = [f"{first[0]}={value:g}" for value in first[1]]
    save_image(contact_sheet(images, columns, [Grid.label(cell) for cell in row_cells]), sheet)
    report = {
        "command": "edit",
        "outputs": [str(p) for p in outputs],
        "model": source.spec.name,
        "src": source.prompt,
        "targets": [target],
        "seed": inversion.seed,
        "grid": [{"output": str(path), "settings": edit.settings.as_dict()} for path, edit in zip(outputs, prepared)],
        "sheet": str(sheet),
        "size": list(results[0].targets[0].size),
    }
    if metrics:
        report.update(
            _score_cells(source, target, by_cell, metrics, rule, report["grid"], base, request.device, reporter)
        )
    return _with_decoder(report, request, source.spec)


def _grid_scoring(request: EditRequest, source) -> tuple[list[str], PickRule | None]:
    """The metrics to score the cells with (--score, and whatever --pick names) and the rule."""
    from .evaluation import METRICS, check_metrics

    if not request.score and request.pick is None:
        return [], None
    if source.image is None:
        raise UsageError("--score and --pick compare each cell with the photo", "edit the photo, not a latent file")
    rule = parse_pick(request.pick, METRICS) if request.pick is not None else None
    names = list(dict.fromkeys([*request.score, *(rule.metrics if rule else [])]))
    if "clip_edited" in names:
        raise UsageError("clip_edited needs PIE-Bench's edit region, which a grid has not", "use clip_whole")
    check_metrics(names)
    return names, rule  # in the order asked: without --pick the first ranks the cells


def _score_cells(source, target, images, metrics, rule, cells, base, device, reporter) -> dict:
    """Each cell's scores (whole-image forms: a grid has no mask), the cells ranked (by the pick
    rule's metric, else the first one asked for), and the picked cell written as `base`."""
    from .evaluation import Scorer

    scorer = Scorer(metrics, resolve_device(device))
    step = reporter.stage("scoring cells", len(images))
    scores = []
    for image in images:
        scores.append(scorer.score(source.image, image, target, None))
        step()
    ranking_rule = rule or PickRule(metrics[0])
    order, picked = rank(scores, ranking_rule)
    for cell, cell_scores in zip(cells, scores):
        cell["scores"] = {k: (v if v == v and abs(v) != float("inf") else None) for k, v in cell_scores.items()}
    extra = {"ranking": [cells[i]["output"] for i in order], "ranked_by": ranking_rule.describe()}
    if rule is not None:
        if picked is None:
            reporter.note(f"note: no cell meets --pick ({rule.describe()}); nothing written as {base}")
        else:
            save_image(images[picked], base)
            extra.update(picked=str(base), picked_cell=cells[picked]["output"])
    return extra


def _edit_cells(editor: Editor, jobs: list[EditJob], on_step) -> list:
    """All jobs as one batch; one by one when that does not fit in memory (same results)."""
    try:
        return editor.edit_many(jobs, on_step=on_step)
    except RuntimeError as exc:
        if "out of memory" not in str(exc).lower() or len(jobs) == 1:
            raise
        batch.free_device_memory()
        return [editor.edit_many([job], on_step=on_step)[0] for job in jobs]


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
    grid: tuple[str, ...] = ()  # --grid KEY=V1,V2,...: every item once per cell


def batch_items(request: BatchRequest, spec: ModelSpec | None = None) -> tuple[list[manifests.BatchItem], str | None]:
    """Every item of the input, before any model: problems of the input as a whole raise
    ManifestError (all at once); a row's own problem is kept on its item, to be recorded."""
    defaults = manifests.BatchDefaults(**request.defaults, model=spec)
    first = Path(request.inputs[0])
    problems = []
    if request.images is not None and not request.images.is_dir():
        problems.append(f"--images folder {request.images} does not exist")
    if len(request.inputs) == 1 and first.suffix.lower() in manifests.MANIFEST_SUFFIXES:
        if not first.is_file():
            raise manifests.ManifestError([f"manifest not found: {first}", *problems])
        try:
            rows = manifests.read_manifest(first)
        except manifests.ManifestError as exc:
            raise manifests.ManifestError([*exc.problems, *problems]) from None
        root = request.images or first.parent
    else:
        if request.images is not None:
            raise manifests.ManifestError(["--images is for manifests; give image files or folders directly"])
        rows = [{"image": str(p)} for p in manifests.expand_images(request.inputs)]
        root = Path(".")
    if not rows:
        raise manifests.ManifestError([f"no items in {', '.join(request.inputs)}"])
    problems += manifests.column_problems(rows, defaults)
    if problems:
        raise manifests.ManifestError(problems)
    items = manifests.build_items(rows, root, request.out, defaults)
    note = manifests.unused_cells_note(rows, items)  # blend/amplify cells the items' methods ignore
    return items, note


def run_batch(request: BatchRequest, reporter: Reporter | None = None) -> tuple[batch.Summary, Path]:
    reporter = reporter or Reporter()
    if request.batch_size < 1:
        raise manifests.ManifestError([f"--batch-size {request.batch_size} must be at least 1"])
    check_seed(request.defaults.get("seed", 0))
    check_size(request.size)
    if request.defaults.get("bad_blend", "fail") not in manifests.BAD_BLEND_CHOICES:
        raise UsageError(
            f"--bad-blend {request.defaults['bad_blend']!r} is not one of {', '.join(manifests.BAD_BLEND_CHOICES)}"
        )
    try:
        spec = resolve_model(request.model)
    except IcdEditError:
        batch_items(request)  # an unusable manifest is the first thing to report
        raise
    flags = request.defaults.get("overrides", {})
    # a bad --preset or flag value is the command line's problem (a usage error), not each row's
    settings = resolve_settings(spec, request.defaults.get("preset"), flags)
    amplify, blend = request.defaults.get("amplify"), request.defaults.get("blend")
    check_method_options(spec, settings.method, explicit(flags), amplify, blend)  # the flags' own problem
    grid = parse_grid(request.grid, explicit(flags))
    items, note = batch_items(request, spec)
    if note:
        reporter.note(note)
    shard = manifests.parse_shard(request.shard) or manifests.distributed_shard()
    items = manifests.take_shard(items, shard)  # photos, before a grid: a photo's cells stay in one shard
    batch_size = request.batch_size
    if grid is not None:  # a photo's cells share its inversion (and, at the default batch size, one batch)
        items = manifests.expand_grid(items, grid, spec, request.out)
        batch_size = len(grid.cells()) if batch_size == 1 else batch_size
    device = device_for_shard(request.device, shard)
    make_folder(request.out, "--out")
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

    def on_item(item: manifests.BatchItem, outcome: str) -> None:
        advance()
        if outcome == "failed":
            reporter.note(f"item {item.number} ({item.image.name}) failed: {report.records[item.number]['error']}")

    summary = batch.run_items(
        items,
        report,
        get_editor,
        overwrite=request.overwrite,
        batch_size=batch_size,
        side_by_side_images=request.side_by_side,
        size=request.size,
        on_item=on_item,
    )
    return summary, report.path


# -- models and download ---------------------------------------------------------------------------
