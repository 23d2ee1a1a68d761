"""`icdedit batch`: one model load, every row of a manifest (or every photo of a folder) edited.

The input side is `manifests.py` (rows read, checked and prepared before any model); running
many items (resume, shards, failures, out of memory) is `runner.py`. What is left here is the
batch's own part: each row is an `EditPlan` of one cell (`plans.py`), run and written exactly
as `icdedit edit` runs and writes one, except that photos of one processing size are decoded
together and a grid's cells of one photo share its inversion.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path

from PIL import Image

from . import manifests
from .captions import caption_images, captioner_folder, captioner_record, is_auto
from .dry_run import describe_item
from .errors import IcdEditError, UsageError
from .grid import parse_grid
from .images import check_size, load_image
from .masks import read_mask
from .plans import EditMask, EditPlan, write_edit
from .preparation import check_method_options, explicit, resolve_settings
from .presets import check_seed, load_preset, parse_resize
from .ray_engine import EngineOptions, engine_for
from .records import run_record, words_record
from .reporting import Reporter
from .run_context import RunOptions, load_editor, warn_truncation
from .runner import Report, Summary, run_many
from .sources import Source
from .specs import ModelSpec, resolve_model

__all__ = ["BatchRequest", "InversionCache", "Report", "Summary", "batch_items", "dry_run_batch", "run_batch"]


@dataclass(frozen=True)
class BatchRequest:
    inputs: list[str]
    images: Path | None = None
    out: Path = Path("edits")
    model: str | None = None
    size: int | None = None
    shard: str | None = None
    overwrite: bool = False
    side_by_side: bool = False
    batch_size: int = 1
    defaults: dict = field(default_factory=dict)
    grid: tuple[str, ...] = ()  # --grid KEY=V1,V2,...: every item once per cell
    run: RunOptions = field(default_factory=RunOptions)
    captioner: Path | None = None  # --captioner PATH: for rows whose source prompt is blank or `auto`
    engine: EngineOptions = field(default_factory=EngineOptions)  # --engine ray: the rows on Ray actors


def batch_items(
    request: BatchRequest, spec: ModelSpec | None = None, reporter: Reporter | None = None, caption: bool = False
) -> tuple[list[manifests.BatchItem], str | None]:
    """Every item of the input, before the diffusion model: problems of the input as a whole
    raise ManifestError (all at once); a row's own problem is kept on its item, to be recorded.
    With `caption`, rows without a source prompt (a blank or `auto` cell, --src auto) get their
    photo's caption first (the captioner loaded once, freed before the diffusion model)."""
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
        manifests.check_out_not_input(request.inputs, request.out)
        rows = [{"image": str(p)} for p in manifests.expand_images(request.inputs)]
        root = Path(".")
    if not rows:
        raise manifests.ManifestError([f"no items in {', '.join(request.inputs)}"])
    problems += manifests.column_problems(rows, defaults)
    if problems:
        raise manifests.ManifestError(problems)
    captioned = {}
    if caption:
        rows, captioned = caption_rows(rows, root, request, reporter or Reporter())
    items = manifests.build_items(rows, root, request.out, defaults, captioned)
    note = manifests.unused_cells_note(rows, items)
    return items, note


def needs_caption(row: dict, defaults: dict) -> bool:
    """A row whose source prompt is its photo's caption: its src cell blank or `auto`, and the
    command line's --src `auto` where the cell is blank (a manifest with no src column, a folder)."""
    cell = row.get("src", row.get("old_caption"))
    if not manifests.is_blank(cell):
        return is_auto(str(cell))
    flag = defaults.get("src")
    return flag is None and "src" in row or is_auto(flag)


def caption_rows(rows: list[dict], root: Path, request: BatchRequest, reporter: Reporter) -> tuple[list[dict], dict]:
    """The rows with each captioned row's src set to its photo's caption, and the captioned rows'
    numbers with the captioner's record. A photo that cannot be read is left to its row."""
    wanted = {}
    for number, row in enumerate(rows, 1):
        if isinstance(row, dict) and not manifests.is_blank(row.get("image")) and needs_caption(row, request.defaults):
            path = Path(str(row["image"])).expanduser()
            wanted[number] = path if path.is_absolute() else root / path
    images = {}
    for number, path in wanted.items():
        try:
            images[number] = load_image(path)
        except IcdEditError:
            pass  # the row fails when it is read (its image problem, said there)
    if not images:
        return rows, {}
    folder = captioner_folder(request.captioner, reporter, request.run.offline)
    captions = dict(zip(images, caption_images(list(images.values()), folder, request.run.device, reporter)))
    reporter.note(f"captioned {len(captions)} photo(s) for their source prompts")
    rows = [{**row, "src": captions[n]} if n in captions else row for n, row in enumerate(rows, 1)]
    record = captioner_record(request.captioner)
    return rows, {n: record for n in captions}


def _check_request(request: BatchRequest) -> None:
    if request.batch_size < 1:
        raise manifests.ManifestError([f"--batch-size {request.batch_size} must be at least 1"])
    if request.defaults.get("seed") is not None:
        check_seed(request.defaults["seed"])
    check_size(request.size)
    if request.defaults.get("bad_blend", "fail") not in manifests.BAD_BLEND_CHOICES:
        raise UsageError(
            f"--bad-blend {request.defaults['bad_blend']!r} is not one of {', '.join(manifests.BAD_BLEND_CHOICES)}"
        )


@dataclass(frozen=True)
class BatchPlan:
    """What a batch will do, decided before any model: the model, the items (this shard's, a
    grid's cells expanded, preview names), how many a UNet batch takes, the preview decoder."""

    spec: ModelSpec
    items: list
    shard: tuple[int, int] | None
    batch_size: int
    decoder: str | None


def plan_batch(request: BatchRequest, reporter: Reporter, caption: bool = False) -> BatchPlan:
    """Every check and every item of a batch, without loading the diffusion model (`run_batch`
    runs this plan, captions made first with `caption`; `--dry-run` prints it)."""
    _check_request(request)
    request.engine.check()
    if request.engine.engine == "ray" and request.shard is not None:  # before any caption is made
        engine_for(request.engine, manifests.parse_shard(request.shard), request.run.device, reporter)
    preset = request.defaults.get("preset")
    try:  # a preset's `model` chooses the model when no --model is given, as in `edit`
        chosen = load_preset(preset) if preset else None
        spec = resolve_model(request.model or (chosen and chosen.model))
    except IcdEditError:
        batch_items(request)  # an unusable manifest is the first thing to report
        raise
    flags = request.defaults.get("overrides", {})
    # a bad --preset or flag value is the command line's problem (a usage error), not each row's
    settings = resolve_settings(spec, chosen, flags)
    amplify, blend = request.defaults.get("amplify"), request.defaults.get("blend")
    check_method_options(spec, settings.method, explicit(flags), amplify, blend)  # the flags' own problem
    grid = parse_grid(request.grid, explicit(flags))
    decoder = request.run.decoder_label(spec)  # a missing preview decoder fails before anything runs
    items, note = batch_items(request, spec, reporter, caption)
    if note:
        reporter.note(note)
    shard = manifests.parse_shard(request.shard) or manifests.distributed_shard()
    items = manifests.take_shard(items, shard)  # photos, before a grid: a photo's cells stay in one shard
    batch_size = request.batch_size
    if grid is not None:  # a photo's cells share its inversion (and, at the default batch size, one batch)
        items = manifests.expand_grid(items, grid, spec, request.out)
        batch_size = len(grid.cells()) if batch_size == 1 else batch_size
    if decoder is not None:  # a preview never replaces a full image (and is a different item to resume)
        items = [replace(item, output=_preview_name(item.output)) for item in items]
    return BatchPlan(spec, items, shard, batch_size, decoder)


def run_batch(request: BatchRequest, reporter: Reporter | None = None) -> tuple[Summary, Path]:
    reporter = reporter or Reporter()
    plan = plan_batch(request, reporter, caption=True)
    engine = engine_for(request.engine, plan.shard, request.run.device, reporter)
    work = EditWork(plan.spec, request.size, request.side_by_side, plan.decoder, reporter, asked_model=request.model)
    options = request.run.for_shard(plan.shard)
    return run_many(
        plan.items,
        work,
        out=request.out,
        shard=plan.shard,
        get_editor=partial(load_editor, plan.spec, options, reporter),
        engine=engine,
        reporter=reporter,
        label="editing",
        batch_size=plan.batch_size,
        overwrite=request.overwrite,
    )


def dry_run_batch(request: BatchRequest, reporter: Reporter | None = None) -> list[dict]:
    """`batch --dry-run`: each item's resolved plan (dry_run.describe_item), no model loaded."""
    plan = plan_batch(request, reporter or Reporter())
    return [describe_item(item, request.side_by_side) for item in plan.items]


def resized(image, settings):
    """The photo at the settings' `resize` (the official SDXL launcher's square 1024x1024, aspect
    not kept), with Pillow's default filter for `resize`, bicubic, as the launcher's call uses."""
    if settings.resize is None:
        return image
    return image.resize(parse_resize(settings.resize), Image.Resampling.BICUBIC)


def _preview_name(path: Path) -> Path:
    return path.with_name(f"{path.stem}-preview{path.suffix}")


class InversionCache:
    """The last few inversions, keyed by (photo, source prompt, seed, processing size)."""

    def __init__(self, size: int = 8):
        self.size = size
        self.entries: dict[tuple, object] = {}

    @staticmethod
    def key(item: manifests.BatchItem, size: int | None) -> tuple:
        return (str(item.image), item.src, item.seed, size)

    def get(self, key: tuple):
        return self.entries.get(key)

    def put(self, key: tuple, inversion) -> None:
        self.entries.pop(key, None)
        self.entries[key] = inversion
        while len(self.entries) > self.size:
            self.entries.pop(next(iter(self.entries)))


@dataclass
class EditWork:
    """The batch's part of a run (runner.Work): each row an edit plan of one cell."""

    spec: ModelSpec
    size: int | None
    side_by_side: bool
    decoder: str | None
    reporter: Reporter
    inversions: InversionCache = field(default_factory=InversionCache)  # a grid's cells share one
    truncation: dict = field(default_factory=dict)  # prompt -> its truncation warning (None: fits), once a run
    asked_model: str | None = None  # --model as given, for the outputs' records

    def load(self, item: manifests.BatchItem) -> EditPlan:
        """The row's plan: its photo and mask read, its prepared edit, its outputs."""
        image = resized(load_image(item.image), item.settings)
        mask = EditMask(read_mask(item.mask), item.mask) if item.mask is not None else None
        side = item.output.with_name(f"{item.output.stem}-side-by-side{item.output.suffix}")
        return EditPlan(
            spec=self.spec,
            source=Source(self.spec, item.src, image=image),
            input=item.image,
            seed=item.seed,
            size=self.size,
            cells=(item.prepared,),
            outputs=((item.output,),),
            mask=mask,
            side_by_side=side if self.side_by_side else None,
            decoder=self.decoder,
            asked_model=self.asked_model,
            caption=item.caption,
        )

    def group_key(self, item, plan: EditPlan, editor) -> tuple[int, int]:
        return editor.processing_size(plan.source.image.size, self.size)

    def chunk_key(self, item: manifests.BatchItem) -> tuple:
        return InversionCache.key(item, self.size)  # a photo's cells together: one inversion

    def run(self, editor, group: list[tuple[manifests.BatchItem, EditPlan]]) -> list:
        """One inversion per distinct (photo, source prompt, seed), then every row's job as one
        UNet batch; per row (its result, its mask at the processing size)."""
        keys = [InversionCache.key(item, self.size) for item, _ in group]
        found = {key: self.inversions.get(key) for key in keys}  # the group's own: the cache may evict
        firsts = {key: plan for key, (_, plan) in reversed(list(zip(keys, group))) if found[key] is None}
        if firsts:
            plans = list(firsts.values())
            images, prompts = [p.source.image for p in plans], [p.source.prompt for p in plans]
            made = editor.invert_many(images, prompts, [p.seed for p in plans], self.size)
            for key, inversion in zip(firsts, made):
                found[key] = inversion
                self.inversions.put(key, inversion)
        jobs = [plan.jobs(found[key])[0] for (_, plan), key in zip(group, keys)]
        return list(zip(editor.edit_many(jobs), (job.mask for job in jobs)))

    def finish(self, editor, item, plan: EditPlan, made) -> dict:
        result, mask = made
        item.output.parent.mkdir(parents=True, exist_ok=True)
        fields = write_edit(
            plan, [result], plan.source.image, mask, run_record(editor, self.decoder), batch_item=item.number
        )
        # a row's line keeps its format: the words without `derived`
        fields["words"] = [{k: v for k, v in words_record(w).items() if k != "derived"} for w in result.words]
        fresh = [p for p in plan.prompts if p and p not in self.truncation]
        found = warn_truncation(editor, fresh, self.reporter)  # once per prompt in the run, as `edit` warns
        self.truncation.update({p: found.get(p) for p in fresh})
        truncated = [self.truncation[p] for p in plan.prompts if p and self.truncation[p]]
        if truncated or item.warning:
            fields["warning"] = "; ".join([*([item.warning] if item.warning else []), *truncated])
        if self.decoder:
            fields["decoder"] = self.decoder
        return fields
