"""The one many-item runner: `batch`, `batch --grid` and `generate --prompts` supply only the
per-group work and the per-item record; everything else about running many items is here.

What it owns: the output folder (created; locked per results file, so a second run on the
same folder and shard fails at once; the temp files of runs that are gone removed, in every
folder of its outputs), the results file (a plain file, never followed through a link) and its
name per shard, resuming (done items whose outputs are still whole skipped), an output path
already taken by a file the report does not record as this folder's (failed, unless
--overwrite), items with a known problem recorded
as failed without running, the lazily loaded editor (a run with nothing to do loads nothing),
grouping (consecutive items with one group key, up to `batch_size`), the fallback when a group
fails (each item alone, so every item gets its own outcome; out of memory recognised by type),
the summary and its exit code, and Ctrl-C (the report is compacted and resumable).

`results.jsonl` gets one line appended per item as it starts (`started`: its outputs are this
folder's from then on) and one as it finishes (a later line for the same item wins), and is
compacted, atomically, to one line per item when the run ends (a `started` line whose output
was never written dropped). A failed item whose run had started keeps the claim (`claimed`), so a
rerun replaces what it may have half written. A run stopped at any
moment leaves at worst one cut-off last line, which the next run ignores (it redoes that item);
the next run skips what is recorded as done and still on disk. Appending keeps a 30,000-image
run linear: rewriting the whole report after every item would be quadratic.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from .errors import IcdEditError, OutputError, first_line
from .files import FolderLock, inside, make_folder, remove_stale_temp_files, write_atomically
from .reporting import Reporter
from .run_context import free_device_memory, is_out_of_memory


class Item(Protocol):
    """What the runner needs of an item: its number (1-based), the key of its work (a changed
    item is redone), its main output, the fields its record carries, and a known problem."""

    number: int
    output: Path
    problem: str | None

    @property
    def key(self) -> str: ...

    def describe(self) -> dict: ...


class Work(Protocol):
    """A command's part of a run."""

    def load(self, item) -> object:
        """The item's inputs, read before any model runs (an IcdEditError fails the item)."""

    def group_key(self, item, loaded, editor) -> Hashable:
        """Items with equal keys may run as one group (e.g. photos of one processing size)."""

    def chunk_key(self, item) -> Hashable:
        """Consecutive items with equal keys go to one Ray worker together (a photo's grid cells:
        one inversion); read before any input is, on the driver."""

    def run(self, editor, group: list[tuple[object, object]]) -> list[object]:
        """One result per (item, loaded) of the group, made together."""

    def finish(self, editor, item, loaded, result) -> dict:
        """Write the item's outputs; the fields its record adds. OSError / OutputError fail it."""


# -- the report -----------------------------------------------------------------------------------
class Report:
    """results.jsonl: a line appended whenever an item finishes, compacted when the run ends."""

    def __init__(self, path: Path):
        self.path = path
        self.records: dict[int, dict] = {}
        data = path.read_bytes() if path.is_file() else b""
        self._cut_off = bool(data) and not data.endswith(b"\n")  # a killed run's half-written last line
        self.damaged = 0  # lines that are not a record (bad UTF-8, not JSON): their items are redone
        lines = data.split(b"\n")
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
                self.records[int(record["item"])] = record
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError):
                if not (self._cut_off and number == len(lines)):
                    self.damaged += 1

    def is_done(self, item) -> bool:
        """Recorded as done with the same key, and its output still whole on disk: the size it
        was written with and, for an image, a header that PIL reads (a truncated file is redone)."""
        record = self.records.get(item.number)
        if not (record and record.get("status") == "done" and record.get("key") == item.key):
            return False
        return output_intact(Path(item.output), record.get("bytes"))

    def wrote(self, item) -> bool:
        """Whether this folder's report says that the item's output file is its own (written, or
        started, by a run of this report), so that a rerun may replace it."""
        record = self.records.get(item.number)
        if not record or record.get("output") != str(item.output):
            return False
        return record.get("status") in ("done", "started") or bool(record.get("claimed"))

    def record(self, item, status: str, **fields) -> dict:
        if status == "failed" and self.wrote(item):  # it may have written its output before failing
            fields.setdefault("claimed", True)
        record = {"item": item.number, "key": item.key, "status": status, **item.describe()}
        record.update(output=str(item.output), **fields)
        self.records[item.number] = record
        line = json.dumps(record, default=str) + "\n"
        if self._cut_off:  # start a fresh line after it
            line, self._cut_off = "\n" + line, False
        try:
            # never through a symbolic link: the report is icdedit's own file, in --out
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            with open(fd, "a", encoding="utf-8") as handle:
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
        for number, record in list(self.records.items()):  # a claim on an output never written: dropped
            claims = record.get("status") == "started" or record.get("claimed")
            if not claims or os.path.lexists(record.get("output", "")):
                continue
            if record["status"] == "started":
                del self.records[number]
            else:
                record.pop("claimed")
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
    remaining: int = 0  # items neither done, skipped nor failed when the run stopped (Ctrl-C)

    def as_dict(self) -> dict:
        data = asdict(self)  # items in order, however they finished (Ray workers finish out of order)
        done = sorted(zip(self.done, self.seconds))
        data["done"], data["seconds"] = [n for n, _ in done], [s for _, s in done]
        data["skipped"] = sorted(self.skipped)
        data["failed"] = {str(k): self.failed[k] for k in sorted(self.failed)}
        data["seconds_per_item"] = round(sum(self.seconds) / len(self.seconds), 3) if self.seconds else None
        return data

    @property
    def exit_code(self) -> int:
        if self.interrupted:
            return 130
        return 1 if self.failed else 0


def output_intact(path: Path, size: int | None) -> bool:
    """A recorded output that is still what was written: a file, of its recorded size (records
    of older runs have none), and for an image, one whose header and size PIL can read."""
    try:
        if not path.is_file() or (size is not None and path.stat().st_size != size):
            return False
    except OSError:
        return False
    if path.suffix.lower() not in (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"):
        return True
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.size[0] > 0 and image.size[1] > 0
    except Exception:  # PIL raises many kinds for a damaged file: any of them means redo it
        return False


def report_name(shard: tuple[int, int] | None) -> str:
    return "results.jsonl" if shard is None else f"results-shard-{shard[0]}-of-{shard[1]}.jsonl"


# -- running --------------------------------------------------------------------------------------
@dataclass
class Outcome:
    """How one item ended, where it ran (this process or a Ray worker): `done` with the fields
    its record adds (what the work's `finish` returned, the output's size, a warning), or
    `failed` with `error`. Plain values, so that a worker can send it back to the driver."""

    number: int
    status: str  # done | failed
    seconds: float
    fields: dict = field(default_factory=dict)


def failed(item, reason: str, started: float) -> Outcome:
    warning = getattr(item, "warning", None)
    extra = {"warning": warning} if warning else {}
    return Outcome(item.number, "failed", time.perf_counter() - started, {"error": reason, **extra})


def execute(
    items: Sequence,
    work: Work,
    editor: Callable[[], object],
    batch_size: int,
    emit: Callable[[Outcome], None],
    starting: Callable[[list], None] | None = None,
) -> None:
    """The per-item part of every run, the same in this process and in each Ray worker: read an
    item's inputs, group items of one key (up to `batch_size`), run each group, write its items;
    one Outcome per item, emitted as soon as it is known. `starting(items)` hears a group
    before it runs (the local runner records them as started)."""
    pending: list[tuple[object, object]] = []
    pending_key: list[Hashable] = []

    def flush() -> None:
        if pending:
            if starting is not None:
                starting([item for item, _ in pending])
            _run_group(work, editor(), list(pending), emit)
            pending.clear()

    for item in items:
        started = time.perf_counter()
        try:
            loaded = work.load(item)
        except IcdEditError as exc:
            emit(failed(item, str(exc), started))
            continue
        key = work.group_key(item, loaded, editor())
        if pending and (key != pending_key[0] or len(pending) >= batch_size):
            flush()
        pending.append((item, loaded))
        pending_key[:] = [key]
    flush()


def _run_group(work: Work, editor, group: list[tuple[object, object]], emit: Callable[[Outcome], None]) -> None:
    """The group together; when that fails (out of memory, or one item's problem), each item
    alone, so that every item gets its own outcome and a batch too big for memory still runs."""
    if len(group) > 1:
        started = time.perf_counter()
        try:
            results = work.run(editor, group)
        except (IcdEditError, RuntimeError, MemoryError) as exc:
            if not isinstance(exc, IcdEditError) and not is_out_of_memory(exc):
                raise
            free_device_memory()
        else:
            seconds = (time.perf_counter() - started) / len(group)
            for (item, loaded), result in zip(group, results):
                emit(_finish(work, editor, item, loaded, result, seconds))
            return
    for item, loaded in group:
        started = time.perf_counter()
        try:
            (result,) = work.run(editor, [(item, loaded)])
        except IcdEditError as exc:
            emit(failed(item, str(exc), started))
            continue
        except (RuntimeError, MemoryError) as exc:  # out of memory: record, go on; anything else is a bug
            if not is_out_of_memory(exc):
                raise
            free_device_memory()
            emit(failed(item, f"out of memory: {first_line(exc)}", started))
            continue
        emit(_finish(work, editor, item, loaded, result, time.perf_counter() - started))


def _finish(work: Work, editor, item, loaded, result, seconds: float) -> Outcome:
    """The item's outputs written (a full disk or a vanished folder fails this item, not the run)."""
    started = time.perf_counter() - seconds
    try:
        fields = work.finish(editor, item, loaded, result)
    except (OSError, OutputError) as exc:
        reason = exc.message if isinstance(exc, OutputError) else f"cannot write {item.output}: {exc.strerror}"
        return failed(item, reason, started)
    warning = getattr(item, "warning", None)
    if warning and "warning" not in fields:
        fields["warning"] = warning
    try:  # the size written: a rerun redoes an output cut short since
        fields.setdefault("bytes", Path(item.output).stat().st_size)
    except OSError:
        pass
    return Outcome(item.number, "done", seconds, fields)


@dataclass
class Run:
    """One run over many items, on the driver: every outcome recorded in the report, counted in
    the summary, and shown."""

    report: Report
    summary: Summary
    reporter: Reporter
    step: Callable[..., None]
    items: dict[int, object]  # number -> item

    def record(self, outcome: Outcome) -> None:
        item = self.items[outcome.number]
        if outcome.status == "done":
            self.summary.done.append(item.number)
            self.summary.seconds.append(outcome.seconds)
        else:
            self.summary.failed[item.number] = outcome.fields["error"]
            self.reporter.note(f"item {item.number} ({_name(item)}) failed: {outcome.fields['error']}")
        self.report.record(item, outcome.status, seconds=round(outcome.seconds, 3), **outcome.fields)
        self.advance()

    def started(self, items: list) -> None:
        """Items about to be written: their outputs are this folder's from now on, so that a run
        killed before recording them replaces, on resume, what it had half done."""
        for item in items:
            self.report.record(item, "started")

    def skip(self, item) -> None:
        self.summary.skipped.append(item.number)
        self.advance()

    def advance(self) -> None:
        """One more item has its outcome: the display hears the run's counts so far."""
        summary = self.summary
        self.step(done=len(summary.done), failed=len(summary.failed), skipped=len(summary.skipped))

    def interrupted(self) -> None:
        summary = self.summary
        summary.interrupted = True
        summary.remaining = len(self.items) - len(summary.done) - len(summary.skipped) - len(summary.failed)

    def to_run(self, items: Sequence, overwrite: bool) -> list:
        """The items that need running: those done are skipped, those with a known problem or an
        output that is not this folder's are failed, each recorded at once."""
        todo = []
        for item in items:
            if not overwrite and self.report.is_done(item):
                self.skip(item)
            elif item.problem is not None:
                self.record(failed(item, item.problem, time.perf_counter()))
            elif not overwrite and os.path.lexists(item.output) and not self.report.wrote(item):
                reason = f"output {item.output} exists and is not this run's (--overwrite replaces it)"
                self.record(failed(item, reason, time.perf_counter()))
            else:
                todo.append(item)
        return todo


def _name(item) -> str:
    image = getattr(item, "image", None)
    return image.name if image is not None else Path(item.output).name


class Engine(Protocol):
    """Where the items that need running run (`execute` on each): this process, or Ray workers
    (`ray_engine.RayEngine`). The driver records every outcome through `run`."""

    def run_items(
        self, items: list, work: Work, get_editor: Callable[[], object], batch_size: int, run: Run
    ) -> None: ...


class LocalEngine:
    """This process: the editor loaded on first need (a run with nothing to do loads nothing)."""

    def run_items(self, items: list, work: Work, get_editor: Callable[[], object], batch_size: int, run: Run) -> None:
        editors: list = []

        def editor():
            if not editors:
                editors.append(get_editor())
            return editors[0]

        execute(items, work, editor, batch_size, run.record, starting=run.started)


def run_many(
    items: Sequence,
    work: Work,
    *,
    out: Path,
    shard: tuple[int, int] | None,
    get_editor: Callable[[], object],
    reporter: Reporter,
    label: str,
    batch_size: int = 1,
    overwrite: bool = False,
    engine: Engine | None = None,
) -> tuple[Summary, Path]:
    """Run every item not already done; record each outcome as soon as it is known."""
    make_folder(out, "--out")
    name = report_name(shard)
    report_path = out / name
    if report_path.is_symlink():
        raise OutputError(
            f"{report_path} is a symbolic link: icdedit writes its results file only as a plain file in --out",
            "remove the link (or choose another --out)",
        )
    with FolderLock(out / f"{name}.lock", f"--out {out} ({name})"):
        folders = sorted({out, *(Path(i.output).parent for i in items if inside(i.output, out))})
        _remove_stale(folders)  # this run's stale temp files: in --out and the folders of its outputs (grid cells)
        try:
            return _run_locked(items, work, report_path, get_editor, reporter, label, batch_size, overwrite, engine)
        finally:
            _remove_stale(folders)  # a worker killed in this run left its own


def _remove_stale(folders: list[Path]) -> None:
    for folder in folders:
        if folder.is_dir():
            remove_stale_temp_files(folder)


def _run_locked(
    items, work, report_path, get_editor, reporter, label, batch_size, overwrite, engine
) -> tuple[Summary, Path]:
    report = Report(report_path)
    if report.damaged:
        reporter.note(
            f"note: {report.damaged} damaged line(s) of {report_path} skipped: their items are redone, or, "
            "where an output of theirs is there, failed as not this run's (--overwrite redoes them)"
        )
    run = Run(report, Summary(), reporter, reporter.stage(label, len(items)), {item.number: item for item in items})
    try:
        todo = run.to_run(items, overwrite)
        if todo:
            (engine or LocalEngine()).run_items(todo, work, get_editor, batch_size, run)
    except KeyboardInterrupt:
        run.interrupted()
    finally:
        report.compact(keep={item.number for item in items})
    return run.summary, report.path
