"""Batch input: manifests and folders read into items, each checked and prepared before any model.

Two kinds of problem, handled differently:
- a manifest that cannot be used as a whole (unreadable or empty, a required column missing,
  a misspelt column name, an images folder that does not exist): every such problem is
  reported at once, before any model is loaded, exit code 2 (`ManifestError`);
- a problem confined to one row (a bad value in one cell, an unparsable blend, a word not in
  its prompt): the item carries it as its `problem`, and the batch runner records it as failed.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from .captions import is_auto, parse_swap, swapped_prompt
from .errors import IcdEditError, OutputError, UsageError, closest_name
from .files import check_name, inside, slug
from .grid import Grid, check_grid_method
from .images import image_format
from .methods import edit_method, readers
from .p2p.launcher_words import launcher_blend
from .preparation import PreparedEdit, check_method_options, prepare_edit, resolve_settings
from .presets import RANGES, ROW_SEED, EditSettings, check_seed, load_preset
from .rows import EXTRA_CELLS, MANIFEST_SUFFIXES, PIE_BENCH, ManifestError, normalise_row, read_manifest  # noqa: F401 (batch input)
from .specs import ModelSpec, resolve_model
from .text import check_prompt
from .word_args import is_amplify_words, parse_amplify, parse_blend

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
TEXT_SETTINGS = ("mode", "method", "amplify_prompt", "words")  # settings a cell gives as text
PROMPT_COLUMNS = ("src", "tgt", "swap")  # swap: the target is the source prompt with words swapped
COLUMNS = {"image", *PROMPT_COLUMNS, "blend", "amplify", "preset", "seed", "output", "mask", *RANGES, *TEXT_SETTINGS}
# Columns of edit words (and the amplify factor) that dataset manifests carry on every row, for
# Prompt-to-Prompt (PIE-Bench's blended_words): see `checked_cells` for when a method that
# ignores them fails the row and when it is only noted.
WORD_COLUMNS = ("blend", "amplify")
BAD_BLEND_CHOICES = ("fail", "ignore")


@dataclass(frozen=True)
class BatchItem:
    number: int  # 1-based position in the input, as people count rows
    image: Path
    src: str
    tgt: str
    settings: EditSettings
    seed: int
    output: Path
    blend: list[tuple[str, str]] | None = None
    amplify: list[tuple[str, float]] | None = None
    no_blend: bool = False  # edited without local blend (--bad-blend ignore)
    problem: str | None = None  # why this row cannot be edited: recorded as failed, never run
    prepared: PreparedEdit | None = None  # the edit, ready to run (when there is no problem)
    warning: str | None = None  # recorded with the item's outcome
    mask: Path | None = None  # a mask image: where the edit may change the photo (masks.py)
    caption: dict | None = None  # src is the photo's caption: the captioner and its settings

    def describe(self) -> dict:
        """Its line in results.jsonl (batch.Report), besides number, key, status and output."""
        return {
            "image": str(self.image),
            "src": self.src,
            "tgt": self.tgt,
            "seed": self.seed,
            "settings": self.settings.as_dict(),
            **({"mask": str(self.mask)} if self.mask is not None else {}),
            **({"source_prompt_from": "captioner"} if self.caption else {}),
        }

    @property
    def key(self) -> str:
        """Identifies the work, so that a resumed run redoes an item whose inputs changed."""
        data = json.dumps(
            [
                str(self.image),
                self.src,
                self.tgt,
                self.settings.as_dict(),
                self.seed,
                self.blend,
                self.amplify,
                str(self.output),
                *(["no blend"] if self.no_blend else []),  # absent otherwise: reports of older runs stay valid
                *([f"mask {self.mask}"] if self.mask is not None else []),
            ],
            default=str,
        )
        return hashlib.sha256(data.encode()).hexdigest()[:16]


# -- reading inputs (rows.py reads the file) ---------------------------------------------------------
def column_problems(rows: list[dict], defaults: BatchDefaults) -> list[str]:
    """What is wrong with the manifest as a whole: misspelt (unknown) and missing columns."""
    named = [k for k in dict.fromkeys(k for row in map(normalise_row, rows) for k in row) if k != EXTRA_CELLS]
    problems = []
    for name in named:
        if name not in COLUMNS:
            close = closest_name(name, [*COLUMNS, *PIE_BENCH])
            hint = f"did you mean {close!r}?" if close else f"known: {', '.join(sorted(COLUMNS))}"
            problems.append(f"unknown column {name!r} ({hint})")
    if "image" not in named:
        problems.append("no image column (image or file_name)")
    for column, pie, flag in (("src", "old_caption", "--src"), ("tgt", "edited_caption", "--tgt")):
        swapped = column == "tgt" and ("swap" in named or defaults.swaps)  # the target made from the source
        if column not in named and getattr(defaults, column) is None and not swapped:
            hint = " (--src auto: each photo's caption)" if column == "src" else " or --swap OLD=NEW"
            problems.append(f"no {column} column ({column} or {pie}) and no {flag}{hint}")
    return problems


def expand_images(paths: Iterable[str]) -> list[Path]:
    """Folders (their images, sorted), globs and plain paths, in the order given."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        elif any(c in raw for c in "*?["):
            found += sorted(Path(p) for p in glob.glob(raw, recursive=True) if Path(p).suffix.lower() in IMAGE_SUFFIXES)
        else:
            found.append(path)  # a missing file becomes a failed item, not a stop
    return found


def check_out_not_input(paths: Iterable[str], out_dir: Path) -> None:
    """Refuse an --out that a folder or glob of the inputs reaches into: a second run would take
    the first run's edits for photos to edit (`batch imgs/ --out imgs/`). Refused on the first
    run as on the second (not only once outputs are there to be found)."""
    out = os.path.realpath(out_dir)
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            reached = os.path.realpath(path) == out
        elif any(c in raw for c in "*?["):
            fixed = Path(*[part for part in iter_fixed(path.parts)] or ["."])
            if "**" in raw:  # a recursive glob reaches every folder under its fixed part
                reached = os.path.realpath(fixed) == out or inside(out_dir, fixed)
            else:
                parents = {os.path.realpath(Path(p).parent) for p in glob.glob(raw)}
                reached = out in parents or (fixed == path.parent and os.path.realpath(fixed) == out)
        else:
            continue
        if reached:
            raise UsageError(
                f"--out {out_dir} is where the input {raw} finds photos: a second run would edit its own outputs",
                "choose an --out folder outside the inputs",
            )


def iter_fixed(parts: Iterable[str]) -> Iterable[str]:
    """A glob's leading path parts without wildcards."""
    for part in parts:
        if any(c in part for c in "*?["):
            return
        yield part


def _row_blend(row: dict, defaults: BatchDefaults, rules: str = "auto") -> list[tuple[str, str]] | None:
    """A row's blend: its cell where the manifest has a blend column, a blank cell meaning no
    local blend (as the official script reads PIE-Bench's ' '); else --blend, or derived (None).
    Under the official word rules the cell is split as the launcher splits it (launcher_blend)."""
    if "blend" not in row:
        return defaults.blend
    if rules == "official":
        pair = launcher_blend(row["blend"])
        return [] if pair is None else [pair]
    blend = parse_blend(row["blend"])
    return [] if blend is None else blend


def is_blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(key: str, value) -> float:
    if isinstance(value, bool):
        raise ValueError(f"{key} {value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{key} {value!r} is not a number") from None


def _seed(value) -> int:
    if isinstance(value, bool):
        raise ValueError(f"seed {value!r} is not a whole number")
    try:
        number = float(value) if isinstance(value, str) and "." in value else value
        if isinstance(number, float) and not number.is_integer():
            raise ValueError
        return check_seed(int(number))
    except (TypeError, ValueError, OverflowError, IcdEditError):
        raise ValueError(f"seed {value!r} is not a whole number from 0 to 2^63 - 1") from None


@dataclass(frozen=True)
class BatchDefaults:
    """What the command line gives every row; a row's own values override these."""

    src: str | None = None
    tgt: str | None = None
    preset: str | None = None
    overrides: dict = field(default_factory=dict)
    seed: int | None = None  # --seed; None: the preset's seed, else 0
    blend: list[tuple[str, str]] | None = None
    amplify: list[tuple[str, float]] | None = None
    bad_blend: str = "fail"  # a blend that cannot be used: "fail" the row, or "ignore" it (no local blend)
    swaps: tuple[tuple[str, str], ...] = ()  # --swap OLD=NEW: a row's target is its source, words swapped
    model: ModelSpec | None = None  # the model edits are prepared for (None: the default model)


def build_items(
    rows: list[dict], image_root: Path, out_dir: Path, defaults: BatchDefaults, captioned: dict | None = None
) -> list[BatchItem]:
    """Every row as an item. Problems of the manifest as a whole raise ManifestError, all at
    once; a problem of one row makes that row an item with its `problem`, to be recorded.
    `captioned`: row number -> the captioner's record, for rows whose src is their photo's caption."""
    problems = column_problems(rows, defaults)
    if problems:
        raise ManifestError(problems)
    defaults = replace(defaults, model=defaults.model or resolve_model(None))
    presets: dict[str, EditSettings] = {}
    items = [
        _build_item(number, normalise_row(row), image_root, out_dir, defaults, presets)
        for number, row in enumerate(rows, 1)
    ]
    items = [replace(item, caption=(captioned or {}).get(item.number)) for item in items]
    seen: dict[Path, int] = {}
    for i, item in enumerate(items):
        if item.problem is not None:
            continue  # a row that fails writes nothing: its output name is free
        if item.output in seen:
            items[i] = replace(item, problem=f"output {item.output.name} is also row {seen[item.output]}'s")
        seen.setdefault(item.output, item.number)
    return items


def expand_grid(items: list[BatchItem], grid: Grid, spec: ModelSpec, out_dir: Path) -> list[BatchItem]:
    """Each item once per grid cell (`batch --grid`): numbered item by item (item n's cells are
    (n - 1) x C + 1 ... n x C), its output in a folder named by the cell's settings, its settings
    the row's with the cell's values on top, prepared again (an amplify axis changes the words)."""
    cells = grid.cells()
    expanded = []
    for item in items:
        try:
            relative = item.output.relative_to(out_dir)
        except ValueError:  # an absolute output cell (inside --out): its path there, in the cell's folder
            real = os.path.relpath(os.path.realpath(item.output), os.path.realpath(out_dir))
            relative = Path(real) if not real.startswith("..") else Path(item.output.name)
        for k, cell in enumerate(cells):
            number = (item.number - 1) * len(cells) + k + 1
            cell_item = replace(item, number=number, output=out_dir / Grid.name_part(cell) / relative)
            if item.problem is None and not inside(cell_item.output, out_dir):
                cell_item = replace(cell_item, problem=output_outside(str(cell_item.output), out_dir))
            if cell_item.problem is None:
                try:
                    check_grid_method(grid, item.settings.method)
                    settings = item.settings.with_overrides("--grid", **cell)
                    cell_item = replace(cell_item, settings=settings)
                    cell_item = replace(cell_item, prepared=_prepared(cell_item, spec))
                except IcdEditError as exc:
                    cell_item = replace(cell_item, problem=str(exc))
            expanded.append(cell_item)
    return expanded


def _build_item(
    number: int, row: dict, image_root: Path, out_dir: Path, defaults: BatchDefaults, presets: dict
) -> BatchItem:
    image = "" if is_blank(row.get("image")) else str(row["image"])
    src = row.get("src") if not is_blank(row.get("src")) else defaults.src
    tgt = row.get("tgt") if not is_blank(row.get("tgt")) else defaults.tgt
    swap_problem = None
    try:
        tgt = _swapped_target(row, src, tgt, defaults)
    except (ValueError, IcdEditError) as exc:
        swap_problem = str(exc)
    image_path = Path(image).expanduser()
    image_path = image_path if image_path.is_absolute() else image_root / image_path
    output = row.get("output")
    if is_blank(output):
        output = f"{number:04d}-{image_path.stem or 'item'}-{slug(str(tgt or ''))}.png"
    output_path = Path(str(output)) if Path(str(output)).is_absolute() else out_dir / str(output)
    try:  # a name the system cannot create (a NUL byte, too long) is the row's problem, before where it is
        check_name(output_path)
        outside = None if inside(output_path, out_dir) else output_outside(str(output), out_dir)
    except OutputError as exc:
        outside = exc.message
    mask = None if is_blank(row.get("mask")) else Path(str(row["mask"])).expanduser()
    mask = mask if mask is None or mask.is_absolute() else image_root / mask
    item = BatchItem(
        number,
        image_path,
        str(src or ""),
        str(tgt or ""),
        resolve_settings(defaults.model),
        defaults.seed or 0,
        output_path,
        mask=mask,
    )
    try:
        if outside is not None:
            raise ValueError(outside)
        if row.get(EXTRA_CELLS) is not None:
            extra = row[EXTRA_CELLS]
            raise ValueError(extra if isinstance(extra, str) else f"{len(extra)} more cell(s) than the header has")
        if not image:
            raise ValueError("image is missing")
        if is_auto(src):
            raise ValueError(f"no caption of {image_path.name} (made when the batch runs, not by --dry-run)")
        if swap_problem is not None:
            raise ValueError(swap_problem)
        if is_blank(src) or is_blank(tgt):
            raise ValueError("src and tgt prompts are needed (columns or --src/--tgt)")
        check_prompt(item.src, "src")
        check_prompt(item.tgt, "tgt")
        preset_name = row.get("preset") if not is_blank(row.get("preset")) else defaults.preset
        cells = {}
        for key in (*RANGES, *TEXT_SETTINGS):
            if is_blank(row.get(key)) or (key == "amplify" and is_amplify_words(row[key])):
                continue  # an amplify cell is a factor (4) or words with their factors (bear=4)
            cells[key] = str(row[key]).strip() if key in TEXT_SETTINGS else _number(key, row[key])
        # a row's own values override the command line's (preparation.resolve_settings)
        settings = resolve_settings(
            defaults.model, _preset(preset_name, presets), defaults.overrides, cells, labels=("command line", "row")
        )
        check_method_options(defaults.model, settings.method, checked_cells(row, cells), cells=True)
        seed = _seed(row["seed"]) if not is_blank(row.get("seed")) else item_seed(defaults.seed, settings, number)
        image_format(output_path)
        item = replace(item, settings=settings, seed=seed)
        if not edit_method(settings.method).controls_attention:  # amplify and blend steer Prompt-to-Prompt only
            return _prepare(item, defaults)
        cell = row.get("amplify")
        amplify = parse_amplify(cell) if not is_blank(cell) and is_amplify_words(cell) else defaults.amplify
        item = replace(item, amplify=amplify)
    except (ValueError, TypeError, IcdEditError) as exc:
        return replace(item, problem=str(exc))
    try:
        item = replace(item, blend=_row_blend(row, defaults, item.settings.words))
    except ValueError as exc:
        item = _unusable_blend(item, str(exc), defaults.bad_blend)
        return item if item.problem else _prepare(item, defaults)
    return _prepare(item, defaults)


def item_seed(flag: int | None, settings: EditSettings, number: int) -> int:
    """A row's seed without a seed cell: --seed, else the preset's (`row`: the row's 0-based
    index, as the official SDXL launcher seeds row j with j), else 0."""
    if flag is not None:
        return flag
    if settings.seed == ROW_SEED:
        return number - 1
    return 0 if settings.seed is None else settings.seed


def output_outside(output: str, out_dir: Path) -> str:
    """Why an output outside --out is refused: a row's output cell names a file inside --out,
    never one elsewhere (an input photo, any existing file), whatever `..`, an absolute path or a
    symbolically linked folder say."""
    return (
        f"output {output!r} is outside --out {out_dir} (an output cell is a file name inside --out, "
        "e.g. room-edit.png; nothing is written elsewhere)"
    )


def checked_cells(row: dict, cells: dict) -> list[str]:
    """The cells of a row that its edit method must read, or the row fails (one policy with the
    command line's flags and grid axes, which are refused: `preparation.check_method_options`).

    Every setting cell (cross_replace, blend_threshold, mode, amplify_prompt, ...) is checked. The
    word columns (blend, amplify) are checked when the row names its method itself (a `method`
    cell): a row asking for `switch` and for blend words contradicts itself. When the method
    comes from elsewhere (the command line, a preset, the model's family), a word cell it ignores
    is only noted (`unused_cells_note`): dataset manifests carry those columns on every row
    (PIE-Bench's blended_words), and `--method switch` over one is a choice for all its rows."""
    words = [key for key in WORD_COLUMNS if not is_blank(row.get(key))]
    if "method" in cells:
        return [*cells, *words]
    return [key for key in cells if key not in WORD_COLUMNS]


def unused_cells_note(rows: list[dict], items: list[BatchItem]) -> str | None:
    """A note naming the rows (their items not failed) whose blend/amplify cells their method
    ignores: the cells `checked_cells` lets through because the method is not the row's own."""
    unused = []
    for row, item in zip(map(normalise_row, rows), items):
        words = [key for key in WORD_COLUMNS if not is_blank(row.get(key))]
        if item.problem is None and edit_method(item.settings.method).ignored(words):
            unused.append(item)
    if not unused:
        return None
    numbers = [item.number for item in unused]
    shown = ", ".join(map(str, numbers[:10])) + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")
    why = edit_method(unused[0].settings.method).why_ignored(WORD_COLUMNS)
    return (
        f"note: the blend/amplify cells of row(s) {shown} are not used: their edit method {why} "
        f"(--method {readers(WORD_COLUMNS)[0]}, or a method column, uses them)"
    )


def parse_swaps(value, what: str = "swap") -> tuple[tuple[str, str], ...]:
    """A swap cell: 'cat=tiger', several separated by spaces or commas."""
    return tuple(parse_swap(part, what) for part in str(value).replace(",", " ").split())


def _swapped_target(row: dict, src, tgt, defaults: BatchDefaults):
    """The row's target: a swap cell (or --swap) applied to its source prompt. A row's own tgt
    cell beside its swap cell is refused; a row's cell wins over the command line's flag."""
    cell = row.get("swap")
    if not is_blank(cell):
        if not is_blank(row.get("tgt")):
            raise ValueError("the row has both a tgt and a swap cell: keep one")
        swaps = parse_swaps(cell)
    elif is_blank(row.get("tgt")) and defaults.swaps:
        swaps = defaults.swaps
    else:
        return tgt
    if is_blank(src) or is_auto(src):
        return tgt  # no source prompt to swap in: the row's problem is said below
    return swapped_prompt(str(src), swaps)


def _prepare(item: BatchItem, defaults: BatchDefaults) -> BatchItem:
    """The item's edit prepared as `edit` prepares one (a word missing from its prompt is found
    here, before any model is loaded); a blend that is the only problem goes by --bad-blend."""
    try:
        return replace(item, prepared=_prepared(item, defaults.model))
    except IcdEditError as exc:
        if item.blend:
            try:  # is the blend the only problem?
                _prepared(replace(item, blend=None, no_blend=True), defaults.model)
            except IcdEditError:
                pass
            else:
                item = _unusable_blend(item, exc.message, defaults.bad_blend)
                return item if item.problem else _prepare(item, defaults)
        return replace(item, problem=str(exc))


def _prepared(item: BatchItem, spec: ModelSpec) -> PreparedEdit:
    return prepare_edit(
        spec, item.src, [item.tgt], item.settings, amplify=item.amplify, blend=item.blend, no_blend=item.no_blend
    )


def _preset(name: str | None, cache: dict) -> EditSettings | None:
    """A preset read once per batch; None (no row or flag names one): the model's default."""
    if name is None:
        return None
    name = str(name)
    if name not in cache:
        cache[name] = load_preset(name)
    return cache[name]


def _unusable_blend(item: BatchItem, reason: str, bad_blend: str) -> BatchItem:
    """A blend that cannot be used fails the row, or with --bad-blend ignore, the row is edited
    without local blend and says so. (The official script edits such rows with an empty blend
    mask, which leaves the photo unedited, silently.)"""
    if bad_blend == "ignore":
        return replace(item, blend=None, no_blend=True, warning=f"{reason}: edited without local blend")
    return replace(item, problem=f"{reason} (--bad-blend ignore edits such rows without local blend)")


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'K/N' with 1 <= K <= N -> (K, N); None when not sharded."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise UsageError(f"--shard {text!r} is not K/N with 1 <= K <= N", "e.g. --shard 2/8")
    return int(match[1]), int(match[2])


def distributed_shard() -> tuple[int, int] | None:
    """Under torchrun / accelerate launch: this rank's shard, from RANK and WORLD_SIZE."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    return int(os.environ.get("RANK", "0")) + 1, world


def take_shard(items: list[BatchItem], shard: tuple[int, int] | None) -> list[BatchItem]:
    """Item i (0-based, input order) belongs to shard (i mod N) + 1: a deterministic partition."""
    if shard is None:
        return items
    k, n = shard
    return [item for i, item in enumerate(items) if i % n == k - 1]
