"""One edit path: `plan_edit` decides everything an edit does before any model loads, and
`run_plan` does it. `edit`, `edit --grid` (a plain edit is a grid of one cell), every batch
row (`batch.py`) and the page (`ui.py`) build an `EditPlan` and run it through the same jobs and
the same writing; the Editor receives only prepared edits and resolves nothing.

Settings are resolved in `edit_settings` and nowhere else: explicit values (flags; a grid
cell over them; in a batch, a row's cells) > the preset (whose `model` key chooses the model
when no --model is given) > for generated noise, its generation's guidance with Prompt-to-
Prompt (`preparation.generated_noise_defaults`) > the model's default preset.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from .captions import caption_from_metadata, caption_metadata, is_auto, swapped_prompt
from .edit_paths import edit_paths, grid_paths
from .errors import UsageError
from .grid import Grid, check_grid_method, parse_grid
from .images import check_size, contact_sheet, save_image, side_by_side
from .latents import is_latent_file, save_latent
from .masks import aspect_note, fit_mask, latent_mask, outline, read_mask
from .methods import edit_method
from .preparation import (
    PreparedEdit,
    explicit,
    generated_noise_defaults,
    prepare_edit,
    resolve_settings,
)
from .presets import EditSettings, check_seed, load_preset
from .records import edit_record, grid_axes, grid_cell, processing_size, record_text, run_record, words_record
from .reporting import Reporter
from .run_context import RunOptions, free_device_memory, is_out_of_memory, warn_truncation
from .sources import Source, inversion_from_latent, latent_metadata, read_source
from .specs import ModelSpec
from .text import check_prompt
from .values import EditJob, Inversion


@dataclass(frozen=True)
class EditRequest:
    """An edit as the command line (or the page) asks for it."""

    source: Path
    targets: list[str]
    src: str | None = None
    model: str | None = None
    preset: str | None = None
    seed: int | None = 0  # None: the preset's seed (its `row` is 0 for one edit), else 0
    overrides: dict = field(default_factory=dict)
    blend: list[tuple[str, str]] | None = None
    no_blend: bool = False
    amplify: list[tuple[str, float]] | None = None
    save_latent: Path | None = None
    side_by_side: bool = False
    size: int | None = None
    output: Path | None = None
    out: Path | None = None  # --out DIR: the folder of every output (a bare -o name goes in it)
    overwrite: bool = False
    grid: tuple[str, ...] = ()  # --grid KEY=V1,V2,...: every combination, from one inversion
    mask: Path | None = None  # where the edit may change the photo (white)
    mask_feather: float = 0.0  # blur radius of the mask's edge, in the photo's pixels
    score: tuple[str, ...] = ()  # with a grid: score each cell with these `eval` metrics
    pick: str | None = None  # with a grid: write the best cell under this rule as the output
    sliders: dict = field(default_factory=dict)  # the page's: applied where the edit method reads them
    run: RunOptions = field(default_factory=RunOptions)
    swaps: tuple[tuple[str, str], ...] = ()  # --swap OLD=NEW: the target is the source prompt, words swapped
    captioner: Path | None = None  # --captioner PATH (for --src auto; captioned before planning)
    caption: dict | None = None  # set when `src` is a caption: the captioner and its settings (records)


@dataclass(frozen=True)
class EditMask:
    """A user's mask image and its feather radius in the photo's pixels."""

    image: Image.Image
    path: Path
    feather: float = 0.0

    @property
    def name(self) -> str:
        return self.path.name

    def fitted(self, inversion: Inversion):
        """At the inversion's processing size, the feather scaled from the photo's pixels."""
        processed, original = inversion.processed_size, inversion.original_size
        scale = processed[0] / original[0] if original[0] else 1.0
        return fit_mask(self.image, processed, self.feather * scale)


@dataclass(frozen=True)
class EditPlan:
    """Everything one edit does, decided before any model loads: the source, one prepared edit
    per cell (its targets decoded together), every output path, the mask."""

    spec: ModelSpec
    source: Source
    input: Path  # the photo or latent file the source was read from
    seed: int
    size: int | None
    cells: tuple[PreparedEdit, ...]
    outputs: tuple[tuple[Path, ...], ...]  # per cell, one image per target
    mask: EditMask | None = None
    grid: Grid | None = None
    sheet: Path | None = None  # a grid's contact sheet
    side_by_side: Path | None = None
    latent: Path | None = None
    decoder: str | None = None  # the preview decoder's label, when it decodes (approximate images)
    scoring: tuple[tuple[str, ...], object, Path | None] | None = None  # metrics, pick rule, picked path
    notes: tuple[str, ...] = ()  # what was derived or inherited, to tell the person
    given: dict = field(default_factory=dict)  # the settings given explicitly (flags, and sliders used)
    asked_model: str | None = None  # the --model as given (a name or a .yaml), for the outputs' records
    caption: dict | None = None  # the source prompt is a caption: the captioner and its settings

    def jobs(self, inversion: Inversion) -> list[EditJob]:
        mask = self.mask.fitted(inversion) if self.mask is not None else None
        return [EditJob.prepared(inversion, cell, mask) for cell in self.cells]

    @property
    def prompts(self) -> list[str]:
        """Every prompt the text encoder will see (for the truncation warning)."""
        cells = self.cells
        return [self.source.prompt, *(t for c in cells for t in c.targets), *(c.amplify_prompt or "" for c in cells)]


# -- settings: the one place they are resolved ----------------------------------------------------
def edit_settings(
    spec: ModelSpec,
    preset: EditSettings | str | None,
    overrides: dict,
    generated: dict[str, float],
    cells: Sequence[dict] = ({},),
    labels: Sequence[str] = ("command line", "--grid"),
    generated_name: str = "the noise file",
) -> tuple[list[EditSettings], str | None]:
    """Each cell's settings, and a note on what generated noise made them inherit. Generated
    noise is edited with Prompt-to-Prompt under its generation's guidance (and tau) unless a
    flag, a cell or a preset says otherwise: a target equal to the prompt is the generated image."""
    note = None
    if generated and preset is None:
        given = set(explicit(overrides)) | {k for cell in cells for k in cell}
        defaults = generated_noise_defaults(spec, generated["guidance"], generated["tau"], overrides.get("method"))
        inherited = {k: v for k, v in defaults.items() if k not in given}
        if inherited:
            shown = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in inherited.items())
            note = (
                f"note: editing generated noise ({generated_name}) with {shown}; --method, --guidance, --tau or "
                "--preset override"
            )
        overrides = {**overrides, **inherited}
    return [resolve_settings(spec, preset, overrides, cell, labels=labels) for cell in cells], note


def library_edit(
    spec: ModelSpec,
    inversion: Inversion,
    targets: Sequence[str],
    settings: EditSettings | None,
    source: str | None = None,
    amplify=None,
    blend=None,
    no_blend: bool = False,
) -> PreparedEdit:
    """`Editor.edit` and friends, called without a prepared edit: prepared as the CLI prepares
    one (unset settings are resolved as `edit` resolves them, generated noise included)."""
    if settings is None:
        generated = {"guidance": inversion.source_guidance, "tau": inversion.source_tau} if inversion.generated else {}
        settings = edit_settings(spec, None, {}, generated)[0][0]
    prompt = source or inversion.prompt
    return prepare_edit(spec, prompt, targets, settings, amplify=amplify, blend=blend, no_blend=no_blend)


# -- planning -----------------------------------------------------------------------------------
def plan_edit(request: EditRequest, source: Source | None = None) -> EditPlan:
    """Read and check everything (files, prompts, settings, words, outputs, the mask): a bad
    request fails here, in milliseconds, before any model. `source`: already read (the page)."""
    if request.seed is not None:
        check_seed(request.seed)
    check_size(request.size)
    _check_target_flags(request)
    targets = [check_prompt(t, "tgt") for t in request.targets]
    chosen = load_preset(request.preset) if request.preset else None
    if source is None:
        src = _source_prompt(request)
        source = read_source(request.source, src, request.model or (chosen and chosen.model), "src")
    if request.swaps:
        targets = [check_prompt(swapped_prompt(source.prompt, request.swaps), "tgt")]
    decoder = request.run.decoder_label(source.spec)  # a missing preview decoder fails before anything else
    grid = parse_grid(request.grid, explicit(request.overrides))
    if grid is not None and len(targets) != 1:
        raise UsageError("--grid takes one --tgt", "run one grid per target prompt")
    cells = grid.cells() if grid is not None else [{}]
    overrides = {**request.overrides, **_read_sliders(source.spec, chosen, request.overrides, request.sliders)}
    settings, inherited = edit_settings(
        source.spec, chosen, overrides, source.generated, cells, generated_name=request.source.name
    )
    if grid is not None:
        check_grid_method(grid, settings[0].method)
    source = _resized_source(source, settings[0])
    prepared = tuple(
        prepare_edit(
            source.spec,
            source.prompt,
            targets,
            cell_settings,
            amplify=request.amplify,
            blend=request.blend,
            no_blend=request.no_blend,
            given=explicit(overrides) + list(cell),
        )
        for cell, cell_settings in zip(cells, settings)
    )
    outputs = grid_paths(request, grid, targets[0], source) if grid is not None else edit_paths(request, targets)
    notes = [inherited] if inherited else []
    notes += [
        f"warning: source and target prompts are identical ({t!r}): this is a reconstruction"
        for t in prepared[0].targets
        if t == source.prompt
    ]
    for target, w in zip(prepared[0].targets, prepared[0].words):  # the same words in every cell
        notes.append(f"{'derived' if w.derived else 'using'} for {target!r}: {w.describe()}")
    mask, mask_note = _plan_mask(request, source)
    notes += [mask_note] if mask_note else []
    return EditPlan(
        spec=source.spec,
        source=source,
        input=request.source,
        seed=_edit_seed(request.seed, settings[0]),
        size=request.size,
        cells=prepared,
        mask=mask,
        decoder=decoder,
        notes=tuple(notes),
        given={k: v for k, v in overrides.items() if v is not None},
        asked_model=request.model or (chosen and chosen.model),
        caption=request.caption or _latent_caption(source, request.src),
        **outputs,
    )


def _check_target_flags(request: EditRequest) -> None:
    """A target comes from --tgt or from --swap, never both (the swap would silently lose)."""
    if request.swaps and request.targets:
        raise UsageError(
            "--swap and --tgt both give the target prompt", "give --tgt 'a photo of ...' or --swap OLD=NEW, not both"
        )
    if not request.swaps and not request.targets:
        raise UsageError("no target prompt", "give --tgt 'a photo of ...', or --swap OLD=NEW to swap a source word")


def _source_prompt(request: EditRequest) -> str | None:
    """--src as given; `auto` on a latent file is the file's own prompt (its caption, when it
    was inverted with `--prompt auto`). A photo's `auto` is captioned before planning."""
    if not is_auto(request.src):
        return request.src
    if is_latent_file(request.source):
        return None
    raise UsageError(
        "--src auto needs the captioner, which runs before planning",
        "call workflow.run_edit (it captions the photo), or write the source prompt",
    )


def _latent_caption(source: Source, src: str | None) -> dict | None:
    """A latent file's caption record, when its own prompt is used and it came from a captioner."""
    if source.latent is None or (src is not None and not is_auto(src)):
        return None
    return caption_from_metadata(source.latent.metadata)


def _edit_seed(flag: int | None, settings: EditSettings) -> int:
    """--seed, else the preset's (its `row`: one edit is row 0), else 0."""
    if flag is not None:
        return flag
    return settings.seed if isinstance(settings.seed, int) else 0


def _resized_source(source: Source, settings: EditSettings) -> Source:
    """A photo resized as the settings' `resize` says (a latent file keeps its size)."""
    if settings.resize is None or source.image is None:
        return source
    from .batch import resized

    return dataclasses.replace(source, image=resized(source.image, settings))


def _read_sliders(spec: ModelSpec, preset, overrides: dict, sliders: dict) -> dict:
    """The sliders the edit method reads (a page shows Prompt-to-Prompt's sliders only for a
    method with attention control, and sends their values all the same)."""
    if not sliders:
        return {}
    unread = edit_method(resolve_settings(spec, preset, overrides).method).ignored(sliders)
    return {k: v for k, v in sliders.items() if k not in unread and v is not None}


def _plan_mask(request: EditRequest, source: Source) -> tuple[EditMask | None, str | None]:
    """The --mask, read and checked (fitted to the processing size when the edit runs)."""
    if request.mask is None:
        return None, None
    feather = request.mask_feather
    if not (math.isfinite(feather) and 0 <= feather <= 256):
        raise UsageError(f"--mask-feather {feather:g} is out of range", "a radius from 0 to 256 pixels")
    image = read_mask(request.mask)
    original = source.image.size if source.image is not None else source.latent.original_size
    mask = EditMask(image, request.mask, feather)
    return mask, aspect_note(image, original, f"the mask {request.mask.name}")


def tell(plan: EditPlan, reporter: Reporter, extra: Iterable[str] = ()) -> None:
    for note in [*plan.notes, *extra]:
        reporter.note(note)


# -- running ------------------------------------------------------------------------------------
def invert_source(editor, source: Source, seed: int, size: int | None, reporter: Reporter) -> Inversion:
    """The inversion of a photo, or the one a latent file holds (no model evaluation then)."""
    if source.latent is not None:
        return inversion_from_latent(source.latent, source.prompt, source.generated)
    step = reporter.stage("inverting", source.spec.plan().num_forward_steps)
    return editor.invert(source.image, source.prompt, seed, size, on_step=step)


def edit_cells(editor, jobs: list[EditJob], *, decode_source=False, source_latent=False, on_step=None) -> list:
    """All jobs as one UNet batch; one by one when that does not fit in memory (same results)."""
    options = {"decode_source": decode_source, "source_latent": source_latent, "on_step": on_step}
    try:
        return editor.edit_many(jobs, **options)
    except (RuntimeError, MemoryError) as exc:
        if not is_out_of_memory(exc) or len(jobs) == 1:
            raise
        free_device_memory()
        return [editor.edit_many([job], **options)[0] for job in jobs]


def write_edit(
    plan: EditPlan, results: list, original: Image.Image | None, mask, run: dict | None = None, **extra
) -> dict:
    """Every cell's images and the side-by-side (the mask outlined on the original), each with
    its record (records.py: `run` is how the model ran, `extra` what the caller adds, e.g. a
    batch row's number): what every edit writes, batch rows included."""
    run = run or {}
    for cell, result, paths in zip(plan.cells, results, plan.outputs):
        cell_values = {"grid_cell": grid_cell(plan, cell)} if plan.grid is not None else {}
        for index, (image, path) in enumerate(zip(result.targets, paths)):
            sizes = {"size": list(image.size), "processing_size": processing_size(result)}
            record = edit_record(plan, cell, index, run, **sizes, **cell_values, **extra)
            save_image(image, path, record_text(record))
    if plan.side_by_side is None:
        return {}
    shown = original if original is not None else results[0].source
    if mask is not None:
        shown = outline(shown, fit_mask(mask, shown.size))
    sizes = {"size": list(results[0].targets[0].size), "processing_size": processing_size(results[0])}
    record = edit_record(plan, plan.cells[0], 0, run, **sizes, image="side-by-side", **extra)
    save_image(side_by_side_image(plan, shown, results[0].targets), plan.side_by_side, record_text(record))
    return {"side_by_side": str(plan.side_by_side)}


def side_by_side_image(plan: EditPlan, original: Image.Image, targets: list[Image.Image]) -> Image.Image:
    """original | edit(s); with several targets each panel is captioned ('original', then each
    target's prompt), since the images alone no longer say which edit is which."""
    prompts = list(plan.cells[0].targets)
    labels = ["original", *prompts] if len(prompts) > 1 else None
    return side_by_side([original, *targets], labels)


def run_plan(editor, plan: EditPlan, reporter: Reporter | None = None, inversion: Inversion | None = None) -> dict:
    """Do what the plan says: invert (unless given the inversion), decode every cell from it as
    one batch, write every output; the report (`--json`)."""
    reporter = reporter or Reporter()
    warn_truncation(editor, plan.prompts, reporter)
    inversion = inversion or invert_source(editor, plan.source, plan.seed, plan.size, reporter)
    jobs = plan.jobs(inversion)
    step = reporter.stage(
        "editing" if len(jobs) == 1 else f"editing {len(jobs)} cells", plan.spec.plan().num_reverse_steps
    )
    decode_source = plan.side_by_side is not None and plan.source.image is None
    results = edit_cells(editor, jobs, decode_source=decode_source, source_latent=plan.latent is not None, on_step=step)
    report = {
        "command": "edit",
        "outputs": [str(p) for paths in plan.outputs for p in paths],
        "model": plan.spec.name,
        "src": plan.source.prompt,
        "targets": list(plan.cells[0].targets),
        "seed": inversion.seed,
    }
    made_with = run_record(editor, plan.decoder)
    written = write_edit(plan, results, plan.source.image, jobs[0].mask, made_with, seed=inversion.seed)
    if plan.grid is None:
        report.update(settings=plan.cells[0].settings.as_dict(), words=[words_record(w) for w in results[0].words])
    else:
        report["grid"] = [
            {"output": str(p[0]), "settings": c.settings.as_dict()} for p, c in zip(plan.outputs, plan.cells)
        ]
        report["sheet"] = str(_write_sheet(plan, results, made_with, inversion.seed))
    report["size"] = list(results[0].targets[0].size)
    report.update(written)
    if plan.latent is not None:
        _write_latent(plan, inversion, results[0], jobs[0].mask, made_with)
        report["latent"] = str(plan.latent)
    if plan.mask is not None:
        report["mask"] = str(plan.mask.path)
    if plan.scoring is not None:
        images = [r.targets[0] for r in results]
        report.update(score_cells(editor, plan, images, report["grid"], reporter))
    return {k: v for k, v in {**report, **_decoder(plan)}.items() if v is not None}


def _decoder(plan: EditPlan) -> dict:
    """What a preview's reports and files add: that its images are approximate."""
    return {"decoder": plan.decoder} if plan.decoder else {}


def _write_sheet(plan: EditPlan, results: list, run: dict, seed: int) -> Path:
    """The contact sheet: the first axis as columns, the other axes' combinations as rows."""
    first, rest = plan.grid.axes[0], Grid(plan.grid.axes[1:])
    row_cells = rest.cells() if rest.axes else [{}]
    by_cell = [r.targets[0] for r in results]  # the first axis varies slowest
    images = [by_cell[c * len(row_cells) + r] for r in range(len(row_cells)) for c in range(len(first[1]))]
    columns = [f"{first[0]}={value:g}" for value in first[1]]
    original = plan.source.image if plan.source.image is not None else results[0].source
    prompts = [f"source: {plan.source.prompt}", f"target: {plan.cells[0].targets[0]}"]
    sheet = contact_sheet(images, columns, [Grid.label(cell) for cell in row_cells], original=original, prompts=prompts)
    sizes = {"size": list(sheet.size), "processing_size": processing_size(results[0])}
    record = edit_record(plan, plan.cells[0], 0, run, seed=seed, image="contact sheet", grid=grid_axes(plan), **sizes)
    save_image(sheet, plan.sheet, record_text(record))
    return plan.sheet


def _write_latent(plan: EditPlan, inversion: Inversion, result, mask, run: dict) -> None:
    """The final latents, rows source then targets for every method, and how they were made."""
    meta = latent_metadata(plan.spec, inversion, plan.input if plan.source.image is not None else None)
    meta["targets"] = " | ".join(plan.cells[0].targets)
    meta["rows"] = "source, targets"
    meta.update(caption_metadata(plan.caption))
    sizes = {"size": list(result.targets[0].size), "processing_size": processing_size(result)}
    record = edit_record(plan, plan.cells[0], 0, run, seed=inversion.seed, image="final latents", **sizes)
    meta["record"] = record_text(record)["icdedit"]
    tensors = None
    if mask is not None:  # the latent-space mask the rows were kept to, and where it came from
        meta["mask"] = f"{plan.mask.name} (feather {plan.mask.feather:g})"
        tensors = {"mask": latent_mask(mask, tuple(result.latents.shape[2:]))}
    save_latent(plan.latent, result.latents, meta, tensors)


def score_cells(editor, plan: EditPlan, images: list, cells: list[dict], reporter: Reporter) -> dict:
    """Each cell's scores (whole-image forms: a grid has no mask), the cells ranked (by the pick
    rule's metric, else the first one asked for), and the picked cell written."""
    from .grid import PickRule, rank
    from .metrics import Scorer

    metrics, rule, picked_path = plan.scoring
    if plan.decoder:
        reporter.note("note: --preview: the cells are scored on approximate images; make the one you keep without it")
    scorer = Scorer(list(metrics), editor.device)
    step = reporter.stage("scoring cells", len(images))
    scores = []
    for image in images:
        scores.append(scorer.score(plan.source.image, image, plan.cells[0].targets[0], None))
        step()
    ranking_rule = rule or PickRule(metrics[0])
    order, picked = rank(scores, ranking_rule)
    for cell, cell_scores in zip(cells, scores):
        cell["scores"] = {k: (v if math.isfinite(v) else None) for k, v in cell_scores.items()}
    extra = {"ranking": [cells[i]["output"] for i in order], "ranked_by": ranking_rule.describe()}
    if rule is not None:
        if picked is None:
            reporter.note(f"note: no cell meets --pick ({rule.describe()}); nothing written as {picked_path}")
        else:
            cell = plan.cells[picked]
            made = edit_record(plan, cell, 0, run_record(editor, plan.decoder), grid_cell=grid_cell(plan, cell))
            save_image(images[picked], picked_path, record_text(made))
            extra.update(picked=str(picked_path), picked_cell=cells[picked]["output"])
    return extra
