"""Batch editing: manifests and folders in, one model load, a resumable report out.

Two kinds of problem, handled differently:
- a manifest that cannot be used (a missing column, a number that is not one, an unknown
  preset): every bad row is reported at once, before any model is loaded, exit code 2;
- an item that fails (a missing or corrupt image, a word not in its prompt, out of memory):
  recorded as failed with its reason, and the batch goes on (exit code 1 at the end).

`results.jsonl` holds one line per item, rewritten atomically after each item, so a run that
is stopped at any moment leaves a consistent report and no half-written file; the next run
skips what is recorded as done and still on disk.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from .errors import IcdEditError, SettingsError
from .files import slug, write_atomically
from .images import image_format, load_image, plan_size, save_image, side_by_side
from .p2p.plan import derive_edit_words, parse_amplify_item
from .presets import RANGES, EditSettings, load_preset
from .text import check_prompt

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".yaml", ".yml")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
COLUMNS = {"image", "src", "tgt", "blend", "amplify", "preset", "seed", "output", *RANGES, "mode"}
PIE_BENCH = {"file_name": "image", "old_caption": "src", "edited_caption": "tgt", "blended_words": "blend"}


class ManifestError(IcdEditError):
    """The manifest (or the command line) cannot be used; `problems` lists every bad row."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        super().__init__(f"{len(problems)} problem(s) in the batch input: " + "; ".join(problems[:20]),
                         "fix the rows above; nothing was run")  # fmt: skip
        self.problems = problems


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

    @property
    def key(self) -> str:
        """Identifies the work, so that a resumed run redoes an item whose inputs changed."""
        data = json.dumps([str(self.image), self.src, self.tgt, self.settings.as_dict(), self.seed,
                           self.blend, self.amplify, str(self.output)], default=str)  # fmt: skip
        return hashlib.sha256(data.encode()).hexdigest()[:16]


# -- reading inputs -------------------------------------------------------------------------------
def read_manifest(path: Path) -> list[dict]:
    """Rows of a CSV, TSV, JSONL or YAML manifest as dicts (PIE-Bench columns renamed)."""
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise ManifestError([f"{path}: cannot read ({exc.strerror})"]) from None
    try:
        if suffix in (".csv", ".tsv"):
            rows = list(csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ","))
        elif suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = yaml.safe_load(text) or []
            rows = rows.get("items", rows) if isinstance(rows, dict) else rows
    except (json.JSONDecodeError, yaml.YAMLError, csv.Error) as exc:
        raise ManifestError([f"{path}: not valid {suffix[1:].upper()} ({str(exc).splitlines()[0]})"]) from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ManifestError([f"{path}: expected a list of rows with image, src and tgt"])
    return [{PIE_BENCH.get(k, k): v for k, v in row.items() if k not in ("", None)} for row in rows]


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


def _parse_blend(value) -> list[tuple[str, str]] | None:
    """'srcword tgtword' (PIE-Bench), a [src, tgt] pair or a list of pairs; blank means none."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        words = value.split()
        if len(words) != 2:
            raise ValueError(f"blend {value!r} is not 'SRCWORD TGTWORD'")
        return [(words[0], words[1])]
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, str) for v in value):
        return [(value[0], value[1])]
    if isinstance(value, (list, tuple)) and all(isinstance(v, (list, tuple)) and len(v) == 2 for v in value):
        return [(str(a), str(b)) for a, b in value]
    raise ValueError(f"blend {value!r} is not 'SRCWORD TGTWORD'")


def _parse_amplify(value) -> list[tuple[str, float]] | None:
    """'bear=4 hat=2', {'bear': 4}, or 'none'; blank means derived."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, dict):
        return [(str(k), float(v)) for k, v in value.items()]
    if isinstance(value, str) and value.strip().lower() == "none":
        return []
    return [parse_amplify_item(item) for item in str(value).replace(",", " ").split()]


def _blank(value) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


@dataclass(frozen=True)
class BatchDefaults:
    """What the command line gives every row; a row's own values override these."""

    src: str | None = None
    tgt: str | None = None
    preset: str | None = None
    overrides: dict = field(default_factory=dict)
    seed: int = 0
    blend: list[tuple[str, str]] | None = None
    amplify: list[tuple[str, float]] | None = None
    model_preset: str = "default"  # the model's own default preset, when neither row nor flag names one


def build_items(rows: list[dict], image_root: Path, out_dir: Path, defaults: BatchDefaults) -> list[BatchItem]:
    """Validate every row; raise ManifestError listing all bad ones at once."""
    problems: list[str] = []
    items: list[BatchItem] = []
    presets: dict[str | None, EditSettings] = {}
    for number, row in enumerate(rows, start=1):
        where = f"row {number}"
        unknown = sorted(set(row) - COLUMNS)
        if unknown:
            problems.append(f"{where}: unknown column(s) {', '.join(unknown)} (known: {', '.join(sorted(COLUMNS))})")
            continue
        try:
            image = row.get("image")
            if _blank(image):
                raise ValueError("image is missing")
            src = row.get("src") if not _blank(row.get("src")) else defaults.src
            tgt = row.get("tgt") if not _blank(row.get("tgt")) else defaults.tgt
            if _blank(src) or _blank(tgt):
                raise ValueError("src and tgt prompts are needed (columns or --src/--tgt)")
            preset_name = row.get("preset") if not _blank(row.get("preset")) else defaults.preset or defaults.model_preset
            if preset_name not in presets:
                presets[preset_name] = load_preset(preset_name)
            overrides = dict(defaults.overrides)
            for key in (*RANGES, "mode"):
                if not _blank(row.get(key)):
                    overrides[key] = row[key] if key == "mode" else float(row[key])
            settings = presets[preset_name].with_overrides(**overrides)
            seed = int(row["seed"]) if not _blank(row.get("seed")) else defaults.seed
            blend = _parse_blend(row.get("blend")) if "blend" in row else defaults.blend
            amplify = _parse_amplify(row.get("amplify")) if not _blank(row.get("amplify")) else defaults.amplify
            image_path = Path(str(image)).expanduser()
            image_path = image_path if image_path.is_absolute() else image_root / image_path
            output = row.get("output")
            if _blank(output):
                output = f"{number:04d}-{image_path.stem}-{slug(str(tgt))}.png"
            output_path = Path(str(output)) if Path(str(output)).is_absolute() else out_dir / str(output)
            image_format(output_path)
        except (ValueError, TypeError, IcdEditError) as exc:
            problems.append(f"{where}: {getattr(exc, 'message', exc)}")
            continue
        items.append(BatchItem(number, image_path, str(src), str(tgt), settings, seed, output_path, blend, amplify))
    seen: dict[Path, int] = {}
    for item in items:
        if item.output in seen:
            problems.append(f"row {item.number}: output {item.output.name} is also row {seen[item.output]}'s")
        seen.setdefault(item.output, item.number)
    if problems:
        raise ManifestError(problems)
    return items


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'K/N' with 1 <= K <= N -> (K, N); None when not sharded."""
    if not text:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match or not 1 <= int(match[1]) <= int(match[2]):
        raise SettingsError(f"--shard {text!r} is not K/N with 1 <= K <= N", "e.g. --shard 2/8")
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


# -- the report -----------------------------------------------------------------------------------
class Report:
    """results.jsonl: one line per item, rewritten atomically whenever an item finishes."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[int, dict] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                    self.records[int(record["item"])] = record
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a line from an older, different run format: redo that item

    def is_done(self, item: BatchItem) -> bool:
        record = self.records.get(item.number)
        return bool(record and record.get("status") == "done" and record.get("key") == item.key and item.output.is_file())

    def record(self, item: BatchItem, status: str, **fields) -> dict:
        record = {
            "item": item.number, "key": item.key, "status": status, "image": str(item.image), "src": item.src,
            "tgt": item.tgt, "seed": item.seed, "settings": item.settings.as_dict(), "output": str(item.output),
            **fields,
        }  # fmt: skip
        self.records[item.number] = record
        self.save()
        return record

    def save(self) -> None:
        lines = "".join(json.dumps(self.records[k], default=str) + "\n" for k in sorted(self.records))
        write_atomically(self.path, lambda tmp: tmp.write_text(lines, encoding="utf-8"))


@dataclass
class Summary:
    done: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    seconds: list[float] = field(default_factory=list)
    interrupted: bool = False

    def as_dict(self) -> dict:
        data = asdict(self)
        data["failed"] = {str(k): v for k, v in self.failed.items()}
        data["seconds_per_item"] = round(sum(self.seconds) / len(self.seconds), 3) if self.seconds else None
        return data

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0


# -- running --------------------------------------------------------------------------------------
def word_problem(item: BatchItem) -> str | None:
    """The reason an item's words cannot work, found without a model (or None)."""
    try:
        derive_edit_words(item.src, item.tgt, item.settings.mode, item.settings.amplify, item.amplify, item.blend)
        check_prompt(item.src, "src")
        check_prompt(item.tgt, "tgt")
    except IcdEditError as exc:
        return str(exc)
    return None


def run_items(
    items: list[BatchItem],
    report: Report,
    get_editor: Callable[[], object],
    *,
    overwrite: bool = False,
    side_by_side_images: bool = False,
    size: int | None = None,
    batch_size: int = 1,
    on_item: Callable[[BatchItem, str], None] | None = None,
    check_words: bool = True,
) -> Summary:
    """Edit every item not already done, up to `batch_size` photos of one processing size per
    UNet batch; record each outcome as soon as it is known. `check_words`: whether the items'
    Prompt-to-Prompt words are checked up front (not for SDXL, which has none)."""
    summary = Summary()
    todo = []
    for item in items:
        if not overwrite and report.is_done(item):
            summary.skipped.append(item.number)
            if on_item:
                on_item(item, "skipped")
            continue
        todo.append(item)
    pending: list[tuple[BatchItem, object]] = []
    pending_size = None

    def flush() -> None:
        if pending:
            for item, outcome in _run_group(pending, report, get_editor(), summary, side_by_side_images, size):
                if on_item:
                    on_item(item, outcome)
            pending.clear()

    try:
        for item in todo:
            started = time.perf_counter()
            problem = word_problem(item) if check_words else None
            image = None
            if problem is None:
                try:
                    image = load_image(item.image)
                except IcdEditError as exc:
                    problem = str(exc)
            if problem is not None:
                _fail(item, report, summary, problem, started)
                if on_item:
                    on_item(item, "failed")
                continue
            processed = plan_size(*image.size, size or get_editor().spec.resolution)
            if pending and (processed != pending_size or len(pending) >= batch_size):
                flush()
            pending.append((item, image))
            pending_size = processed
        flush()
    except KeyboardInterrupt:
        summary.interrupted = True
    return summary


def _run_group(group, report: Report, editor, summary: Summary, side: bool, size: int | None):
    """Edit photos of one processing size together; on any failure, each one alone, so that
    every item gets its own outcome (and a batch that does not fit in memory still runs)."""
    if len(group) > 1:
        started = time.perf_counter()
        try:
            results = _edit_together(editor, group, size)
        except (IcdEditError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "out of memory" not in str(exc).lower():
                raise
            _free_device_memory()
        else:
            seconds = (time.perf_counter() - started) / len(group)
            return [(item, _finish(item, image, result, report, summary, side, seconds))
                    for (item, image), result in zip(group, results)]  # fmt: skip
    return [(item, _run_alone(item, image, report, editor, summary, side, size)) for item, image in group]


def _edit_together(editor, group, size):
    from .editor import EditJob

    inversions = editor.invert_many([image for _, image in group], [i.src for i, _ in group],
                                    [i.seed for i, _ in group], size)  # fmt: skip
    jobs = [EditJob(inv, [item.tgt], item.settings, item.src, item.amplify, item.blend) for (item, _), inv in zip(group, inversions)]
    return editor.edit_many(jobs)


def _run_alone(item: BatchItem, image, report: Report, editor, summary: Summary, side: bool, size: int | None) -> str:
    started = time.perf_counter()
    try:
        inversion = editor.invert(image, item.src, item.seed, size)
        result = editor.edit(inversion, [item.tgt], item.settings, amplify=item.amplify, blend=item.blend)
    except IcdEditError as exc:
        return _fail(item, report, summary, str(exc), started)
    except RuntimeError as exc:  # out of memory and other device failures: record, go on
        if "out of memory" not in str(exc).lower():
            raise
        _free_device_memory()
        return _fail(item, report, summary, f"out of memory: {str(exc).splitlines()[0]}", started)
    return _finish(item, image, result, report, summary, side, time.perf_counter() - started)


def _finish(item: BatchItem, image, result, report: Report, summary: Summary, side: bool, seconds: float) -> str:
    try:
        item.output.parent.mkdir(parents=True, exist_ok=True)
        save_image(result.targets[0], item.output)
        extra = {}
        if side:
            pair = item.output.with_name(f"{item.output.stem}-side-by-side{item.output.suffix}")
            save_image(side_by_side([image, result.targets[0]]), pair)
            extra["side_by_side"] = str(pair)
    except OSError as exc:  # a full disk or a vanished folder fails this item, not the batch
        started = time.perf_counter() - seconds
        return _fail(item, report, summary, f"cannot write {item.output}: {exc.strerror or exc}", started)
    summary.done.append(item.number)
    summary.seconds.append(seconds)
    report.record(item, "done", seconds=round(seconds, 3), words=_words(result), **extra)
    return "done"


def _words(result) -> list[dict]:
    return [{"mode": w.mode, "amplify": dict(w.amplify), "blend": [list(w.blend_source), list(w.blend_target)]}
            for w in result.words]  # fmt: skip


def _fail(item: BatchItem, report: Report, summary: Summary, reason: str, started: float) -> str:
    summary.failed[item.number] = reason
    report.record(item, "failed", error=reason, seconds=round(time.perf_counter() - started, 3))
    return "failed"


def _free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
