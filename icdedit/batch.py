"""Batch editing: one model load, every item of the input, a resumable report out.

An item that fails (a problem found while the manifest was read, a missing or corrupt image,
out of memory, an output that cannot be written) is recorded as failed with its reason, and
the batch goes on (exit code 1 at the end). The input side is `manifests.py`.

`results.jsonl` gets one line appended per finished item (a later line for the same item wins)
and is compacted, atomically, to one line per item when the run ends. A run stopped at any
moment leaves at worst one cut-off last line, which the next run ignores (it redoes that item);
the next run skips what is recorded as done and still on disk. Appending keeps a 30,000-image
run linear: rewriting the whole report after every item would be quadratic.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import IcdEditError, OutputError, first_line
from .files import write_atomically
from .images import load_image, save_image, side_by_side
from .manifests import BatchItem
from .masks import fit_mask, read_mask


# -- the report -----------------------------------------------------------------------------------
class Report:
    """results.jsonl: a line appended whenever an item finishes, compacted when the run ends.

    An item is anything with a `number`, a `key` (its work, so that a changed item is redone),
    an `output` and `describe()` (the fields its line records): batch edits and generations."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[int, dict] = {}
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        self._cut_off = bool(text) and not text.endswith("\n")  # a killed run's half-written last line
        if text:
            for line in text.splitlines():
                try:
                    record = json.loads(line)
                    self.records[int(record["item"])] = record
                except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue  # a line from an older, different run format: redo that item

    def is_done(self, item) -> bool:
        record = self.records.get(item.number)
        return bool(
            record and record.get("status") == "done" and record.get("key") == item.key and item.output.is_file()
        )

    def record(self, item, status: str, **fields) -> dict:
        record = {
            "item": item.number,
            "key": item.key,
            "status": status,
            **item.describe(),
            "output": str(item.output),
            **fields,
        }
        self.records[item.number] = record
        line = json.dumps(record, default=str) + "\n"
        if self._cut_off:  # start a fresh line after it
            line, self._cut_off = "\n" + line, False
        try:
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
        except OSError as exc:
            raise OutputError(
                f"cannot write {self.path}: {exc.strerror or exc}", "free some space or check the folder"
            ) from None
        return record

    def compact(self, keep: set[int] | None = None) -> None:
        """One line per item, in item order, written atomically; with `keep`, only those items
        (a rerun with another grid or file: records of items it no longer has are dropped)."""
        if keep is not None:
            self.records = {k: v for k, v in self.records.items() if k in keep}
        lines = "".join(json.dumps(self.records[k], default=str) + "\n" for k in sorted(self.records))
        write_atomically(self.path, lambda tmp: tmp.write_text(lines, encoding="utf-8"))
        self._cut_off = False


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
) -> Summary:
    """Edit every item not already done, up to `batch_size` photos of one processing size per
    UNet batch; record each outcome as soon as it is known. An item with a `problem` (found
    while the manifest was read) is recorded as failed without running."""
    summary = Summary()
    todo = []
    for item in items:
        if not overwrite and report.is_done(item):
            summary.skipped.append(item.number)
            if on_item:
                on_item(item, "skipped")
            continue
        todo.append(item)
    pending: list[tuple[BatchItem, object, object]] = []
    pending_size = None
    inversions = InversionCache()  # a grid's cells of one photo share its inversion, across groups too

    def flush() -> None:
        if pending:
            run = _run_group(pending, report, get_editor(), summary, side_by_side_images, size, inversions)
            for item, outcome in run:
                if on_item:
                    on_item(item, outcome)
            pending.clear()

    try:
        for item in todo:
            started = time.perf_counter()
            problem = item.problem
            image = mask = None
            if problem is None:
                try:
                    image = load_image(item.image)
                    mask = read_mask(item.mask) if item.mask is not None else None
                except IcdEditError as exc:
                    problem = str(exc)
            if problem is not None:
                record_failure(item, report, summary, problem, started)
                if on_item:
                    on_item(item, "failed")
                continue
            processed = get_editor().processing_size(image.size, size)
            if pending and (processed != pending_size or len(pending) >= batch_size):
                flush()
            pending.append((item, image, mask))
            pending_size = processed
        flush()
    except KeyboardInterrupt:
        summary.interrupted = True
    finally:
        report.compact(keep={item.number for item in items})
    return summary


class InversionCache:
    """The last few inversions, keyed by (photo, source prompt, seed, processing size)."""

    def __init__(self, size: int = 8):
        self.size = size
        self.entries: dict[tuple, object] = {}

    @staticmethod
    def key(item: BatchItem, size: int | None) -> tuple:
        return (str(item.image), item.src, item.seed, size)

    def get(self, key: tuple):
        return self.entries.get(key)

    def put(self, key: tuple, inversion) -> None:
        self.entries.pop(key, None)
        self.entries[key] = inversion
        while len(self.entries) > self.size:
            self.entries.pop(next(iter(self.entries)))


def _run_group(group, report: Report, editor, summary: Summary, side: bool, size: int | None, inversions):
    """Edit photos of one processing size together; on any failure, each one alone, so that
    every item gets its own outcome (and a batch that does not fit in memory still runs)."""
    if len(group) > 1:
        started = time.perf_counter()
        try:
            results = _edit_together(editor, group, size, inversions)
        except (IcdEditError, RuntimeError) as exc:
            if isinstance(exc, RuntimeError) and "out of memory" not in str(exc).lower():
                raise
            free_device_memory()
        else:
            seconds = (time.perf_counter() - started) / len(group)
            return [
                (item, _finish(item, image, result, report, summary, side, seconds))
                for (item, image, _), result in zip(group, results)
            ]
    return [
        (item, _run_alone(item, image, mask, report, editor, summary, side, size, inversions))
        for item, image, mask in group
    ]


def _edit_together(editor, group, size, inversions: InversionCache):
    """One inversion per distinct (photo, source prompt, seed): a grid's cells of one photo share it."""
    keys = [InversionCache.key(item, size) for item, _, _ in group]
    found = {key: inversions.get(key) for key in keys}  # the group's own: the cache may evict while filling
    firsts = {key: image for key, (_, image, _) in reversed(list(zip(keys, group))) if found[key] is None}
    unique = list(firsts)
    if unique:
        made = editor.invert_many([firsts[k] for k in unique], [k[1] for k in unique], [k[2] for k in unique], size)
        for key, inversion in zip(unique, made):
            found[key] = inversion
            inversions.put(key, inversion)
    return editor.edit_many([_job(item, found[key], mask) for (item, _, mask), key in zip(group, keys)])


def _job(item: BatchItem, inversion, mask):
    from .editor import EditJob

    fitted = None if mask is None else fit_mask(mask, inversion.processed_size)
    return EditJob.prepared(inversion, item.prepared, fitted)


def _run_alone(
    item: BatchItem, image, mask, report: Report, editor, summary: Summary, side: bool, size: int | None, inversions
) -> str:
    started = time.perf_counter()
    try:
        key = InversionCache.key(item, size)
        inversion = inversions.get(key)
        if inversion is None:
            inversion = editor.invert(image, item.src, item.seed, size)
            inversions.put(key, inversion)
        result = editor.edit_many([_job(item, inversion, mask)])[0]
    except IcdEditError as exc:
        return record_failure(item, report, summary, str(exc), started)
    except RuntimeError as exc:  # out of memory and other device failures: record, go on
        if "out of memory" not in str(exc).lower():
            raise
        free_device_memory()
        return record_failure(item, report, summary, f"out of memory: {first_line(exc)}", started)
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
    except (OSError, OutputError) as exc:  # a full disk or a vanished folder fails this item, not the batch
        started = time.perf_counter() - seconds
        reason = exc.message if isinstance(exc, OutputError) else f"cannot write {item.output}: {exc.strerror or exc}"
        return record_failure(item, report, summary, reason, started)
    summary.done.append(item.number)
    summary.seconds.append(seconds)
    if item.warning:
        extra["warning"] = item.warning
    report.record(item, "done", seconds=round(seconds, 3), words=_words(result), **extra)
    return "done"


def _words(result) -> list[dict]:
    return [
        {"mode": w.mode, "amplify": dict(w.amplify), "blend": [list(w.blend_source), list(w.blend_target)]}
        for w in result.words
    ]


def record_failure(item, report: Report, summary: Summary, reason: str, started: float) -> str:
    summary.failed[item.number] = reason
    warning = getattr(item, "warning", None)
    extra = {"warning": warning} if warning else {}
    report.record(item, "failed", error=reason, seconds=round(time.perf_counter() - started, 3), **extra)
    return "failed"


def free_device_memory() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
