"""Batch editing: one model load, every item of the input, a resumable report out.

An item that fails (a problem found while the manifest was read, a missing or corrupt image,
out of memory, an output that cannot be written) is recorded as failed with its reason, and
the batch goes on (exit code 1 at the end). The input side is `manifests.py`.

`results.jsonl` holds one line per item, rewritten atomically after each item, so a run that
is stopped at any moment leaves a consistent report and no half-written file; the next run
skips what is recorded as done and still on disk.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import IcdEditError, OutputError
from .files import write_atomically
from .images import load_image, save_image, side_by_side
from .manifests import BatchItem


# -- the report -----------------------------------------------------------------------------------
class Report:
    """results.jsonl: one line per item, rewritten atomically whenever an item finishes.

    An item is anything with a `number`, a `key` (its work, so that a changed item is redone),
    an `output` and `describe()` (the fields its line records): batch edits and generations."""

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
            problem = item.problem
            image = None
            if problem is None:
                try:
                    image = load_image(item.image)
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
            free_device_memory()
        else:
            seconds = (time.perf_counter() - started) / len(group)
            return [
                (item, _finish(item, image, result, report, summary, side, seconds))
                for (item, image), result in zip(group, results)
            ]
    return [(item, _run_alone(item, image, report, editor, summary, side, size)) for item, image in group]


def _edit_together(editor, group, size):
    """One inversion per distinct (photo, source prompt, seed): a grid's cells of one photo share it."""
    from .editor import EditJob

    keys = [(str(item.image), item.src, item.seed) for item, _ in group]
    firsts = {key: image for key, (_, image) in reversed(list(zip(keys, group)))}
    unique = list(firsts)
    inversions = editor.invert_many([firsts[k] for k in unique], [k[1] for k in unique], [k[2] for k in unique], size)
    by_key = dict(zip(unique, inversions))
    return editor.edit_many([EditJob.prepared(by_key[key], item.prepared) for (item, _), key in zip(group, keys)])


def _run_alone(item: BatchItem, image, report: Report, editor, summary: Summary, side: bool, size: int | None) -> str:
    started = time.perf_counter()
    try:
        from .editor import EditJob

        inversion = editor.invert(image, item.src, item.seed, size)
        result = editor.edit_many([EditJob.prepared(inversion, item.prepared)])[0]
    except IcdEditError as exc:
        return record_failure(item, report, summary, str(exc), started)
    except RuntimeError as exc:  # out of memory and other device failures: record, go on
        if "out of memory" not in str(exc).lower():
            raise
        free_device_memory()
        return record_failure(item, report, summary, f"out of memory: {str(exc).splitlines()[0]}", started)
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
