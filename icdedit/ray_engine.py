"""`--engine ray`: the items a run needs done, spread over Ray Data actors on one machine or many.

The driver (this process) does everything it does for a local run (`runner.run_many`): the
items planned and checked, the folder locked, what is done skipped, bad items failed, every
outcome recorded in results.jsonl, the summary. Only the items that need running go to Ray, in
chunks of `batch_size` consecutive items (a `--grid` photo's cells are one chunk, so they share
one inversion, as locally). Each actor loads the model once and runs `runner.execute`, the
local runner's own per-item code, on a chunk at a time; it writes the images (to --out, which
every node must see) and sends back plain `Outcome`s, which the driver alone records: one
writer, no interleaved appends.

Faults: an actor that dies is restarted by Ray, and its chunk retried up to `RETRIES` times;
after that the chunk's items are recorded as failed, with the reason, and the run goes on.
Every item sent is first recorded as started, so a run stopped at any moment (Ctrl-C, kill -9)
resumes: what it had written without recording is its own and is redone.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass

from . import errors
from .errors import IcdEditError, UsageError, first_line
from .reporting import Reporter, take_worker_notes
from .runner import Outcome, Run, Work, execute

RETRIES = 3  # a chunk whose worker dies is run again this many times, then failed
LOCAL = "local"  # --address local: a Ray started on this machine for this run, even when a cluster runs


@dataclass(frozen=True)
class EngineOptions:
    """--engine and Ray's flags: the cluster (`address`: None is Ray's own choice, `local` a new
    Ray on this machine), the actors, and the GPUs each takes (None: 1 where the cluster has
    GPUs and --device is not the CPU, else 0)."""

    engine: str = "local"  # local | ray
    address: str | None = None
    workers: int | None = None  # None: one per GPU of the cluster, or 1 without GPUs
    gpus_per_worker: float | None = None

    def check(self) -> None:
        if self.engine not in ("local", "ray"):
            raise UsageError(f"--engine {self.engine!r} is not one of local, ray")
        ray_only = {"--address": self.address, "--workers": self.workers, "--gpus-per-worker": self.gpus_per_worker}
        given = [flag for flag, value in ray_only.items() if value is not None]
        if self.engine == "local" and given:
            raise UsageError(f"{', '.join(given)} only with --engine ray", "add --engine ray")
        if self.engine == "ray":
            require_ray()
        if self.workers is not None and self.workers < 1:
            raise UsageError(f"--workers {self.workers} must be at least 1")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker {self.gpus_per_worker} must be 0 or more")


def engine_for(options: EngineOptions, shard: tuple[int, int] | None, device: str, reporter: Reporter):
    """The engine `--engine` names (None: this process); `ray` needs the extra and takes no shard."""
    options.check()
    if options.engine == "local":
        return None
    if shard is not None:
        raise UsageError(
            "--shard (or torchrun's ranks) with --engine ray: Ray schedules every item itself",
            "drop --shard, or use --engine local",
        )
    if device.startswith("cuda:"):
        raise UsageError(
            f"--device {device} with --engine ray: Ray gives each worker its own GPU", "use --device cuda (or auto)"
        )
    return RayEngine(options, device, reporter)


def require_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - Ray Data is the part this engine uses
    except ImportError:
        raise UsageError(
            "--engine ray needs Ray Data, which is not installed",
            "install the extra icdedit[ray]: pip install -e '.[ray]' from the clone",
        ) from None
    return ray


@dataclass(frozen=True)
class WorkerJob:
    """What each actor needs, sent once: the command's Work, how to load the editor, the chunks."""

    work: Work
    load_editor: Callable[[], object]
    chunks: list[list]
    batch_size: int


class ChunkWorker:
    """One Ray actor: the model loaded once, then chunks of items run by `runner.execute`. What
    its Reporters note (the model's notes, a prompt's truncation) goes back with each chunk."""

    def __init__(self, job):
        import ray

        self.job = ray.get(job) if isinstance(job, ray.ObjectRef) else job
        self.editor, self.error = None, ""
        try:
            self.editor = self.job.load_editor()
        except IcdEditError as exc:  # the driver ends the run with it, as a local run would
            self.error = json.dumps({"kind": type(exc).__name__, "message": exc.message, "hint": exc.hint})

    def __call__(self, batch: dict) -> dict:
        chunks = [int(index) for index in batch["chunk"]]
        outcomes = [self.run_chunk(index) for index in chunks] if not self.error else ["[]"] * len(chunks)
        notes = json.dumps(take_worker_notes())
        return {
            "chunk": chunks,
            "outcomes": outcomes,
            "error": [self.error] * len(chunks),
            "notes": [notes] * len(chunks),
        }

    def run_chunk(self, index: int) -> str:
        items, outcomes = self.job.chunks[index], []
        try:
            execute(items, self.job.work, lambda: self.editor, self.job.batch_size, outcomes.append)
        except Exception as exc:  # a bug: the chunk's other items fail with it, the run goes on
            reason = f"error in a Ray worker: {type(exc).__name__}: {first_line(exc)} (--engine local --debug: where)"
            ended = {outcome.number for outcome in outcomes}
            outcomes += [Outcome(i.number, "failed", 0.0, {"error": reason}) for i in items if i.number not in ended]
        return json.dumps([asdict(outcome) for outcome in outcomes], default=str)


def chunked(items: list, work: Work, batch_size: int) -> list[list]:
    """Chunks of at most `batch_size` consecutive items, each run on one actor. Items of one
    `work.chunk_key` (a photo's grid cells) stay in one chunk where they fit, so that they share
    its inversion there; other items fill a chunk up (photos of one UNet batch)."""
    runs: list[list] = []
    last = object()
    for item in items:
        key = work.chunk_key(item)
        if not runs or key != last:
            runs.append([])
        runs[-1].append(item)
        last = key
    chunks: list[list] = []
    for run in runs:
        if chunks and len(chunks[-1]) + len(run) <= batch_size:
            chunks[-1].extend(run)
        else:
            chunks += [run[i : i + batch_size] for i in range(0, len(run), batch_size)]
    return chunks


class RayEngine:
    """Runs a run's items on Ray Data actors (runner.Engine)."""

    def __init__(self, options: EngineOptions, device: str, reporter: Reporter):
        self.options, self.device, self.reporter = options, device, reporter

    def run_items(self, items: list, work: Work, get_editor: Callable[[], object], batch_size: int, run: Run) -> None:
        chunks = chunked(items, work, batch_size)
        with _others_to_stderr():
            returned = self._run_chunks(chunks, work, get_editor, batch_size, run)
        reason = (
            f"its Ray worker stopped while running it (tried {RETRIES + 1} times: a lost node, or out of memory); "
            "run the same command to try again"
        )
        for item in (item for index, chunk in enumerate(chunks) if index not in returned for item in chunk):
            run.record(Outcome(item.number, "failed", 0.0, {"error": reason}))

    def _run_chunks(self, chunks, work, get_editor, batch_size, run: Run) -> set[int]:
        """Every chunk through the actors, each outcome recorded as it comes; the chunks returned."""
        ray, connected_here = self._connect()
        returned: set[int] = set()
        noted: set[str] = set()
        rows = None
        logger = logging.getLogger("ray.data")
        level = logger.level
        logger.setLevel(logging.CRITICAL)  # its lines (start, end, stop): icdedit's progress and errors say it all
        try:
            run.started([item for chunk in chunks for item in chunk])  # connected: now they may be written
            rows = iter(self._dataset(ray, WorkerJob(work, get_editor, chunks, batch_size), len(chunks)).iter_rows())
            for row in rows:
                for note in json.loads(row["notes"]):  # each worker's notes, each said once
                    if note not in noted:
                        noted.add(note)
                        self.reporter.note(note)
                if row["error"]:  # the model did not load: nothing can run
                    raise _worker_error(json.loads(row["error"]))
                returned.add(int(row["chunk"]))
                for outcome in json.loads(row["outcomes"]):
                    run.record(Outcome(**outcome))
        except IcdEditError:
            raise
        except Exception as exc:
            raise _driver_error(exc) from None
        finally:
            if hasattr(rows, "close"):
                rows.close()  # stops the streaming execution (Ctrl-C, an error)
            logger.setLevel(level)
            if connected_here:  # this run's connection: its actors end with it (also on Ctrl-C)
                with redirect_stdout(sys.stderr):  # Ray prints its held-back notices to stdout as it stops
                    ray.shutdown()
        return returned

    def _connect(self):
        """Ray, connected as `ray.init` connects by default (RAY_ADDRESS, else the cluster that
        `ray start` started here, else a Ray started for this run), or to --address. (ray,
        whether this run connected it)."""
        ray = require_ray()
        address = self.options.address
        if ray.is_initialized():  # the caller's own Ray (a library user, the tests)
            if address:
                self.reporter.note(f"note: --address {address} ignored: this process is already connected to Ray")
            return ray, False
        quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        with _ray_backend_quiet():
            try:
                ray.init(address=address, **quiet)
            except (ConnectionError, ValueError) as exc:  # ValueError: an address Ray cannot parse
                if address is None and isinstance(exc, ValueError):
                    raise
                if address is not None:
                    hint = "start one: ray start --head" if address == "auto" else "check --address (ray status)"
                    message = f"--address {address}: cannot connect to a Ray cluster ({first_line(exc)})"
                    raise UsageError(message, hint) from None
                ray.init(address=LOCAL, **quiet)  # a stale cluster file of a Ray that is gone: start one
        self.reporter.note(f"ray: {_resources_line(ray)}")
        return ray, True

    def _dataset(self, ray, job: WorkerJob, count: int):
        """The chunks as a dataset mapped by the actor pool. The settings are the dataset's own
        copy of Ray Data's context: the caller's context is left as it was."""
        import ray.data

        context = ray.data.DataContext.get_current()
        saved = {key: getattr(context, key) for key in DATA_SETTINGS}
        for key, value in DATA_SETTINGS.items():
            setattr(context, key, value)
        try:
            gpus = self._gpus_per_worker(ray)
            workers = self._workers(ray, gpus)
            self.reporter.note(f"ray: {workers} worker(s), {gpus:g} GPU(s) each, {count} chunk(s)")
            rows = ray.data.from_items([{"chunk": index} for index in range(count)], override_num_blocks=count)
            with warnings.catch_warnings():  # Ray 2.60 takes the retry bounds only as "remote args" (deprecated)
                warnings.simplefilter("ignore")
                return rows.map_batches(
                    ChunkWorker,
                    batch_size=1,
                    # one chunk at a time: a worker that dies takes only its own chunk's retries with it
                    compute=ray.data.ActorPoolStrategy(size=workers, max_tasks_in_flight_per_actor=1),
                    fn_constructor_kwargs={"job": ray.put(job)},
                    num_gpus=gpus,
                    num_cpus=1,
                    max_restarts=RETRIES * workers,  # lost actors come back (elsewhere, if a node is gone), not forever
                    max_task_retries=RETRIES,
                )
        finally:
            for key, value in saved.items():
                setattr(context, key, value)

    def _gpus_per_worker(self, ray) -> float:
        if self.options.gpus_per_worker is not None:
            return self.options.gpus_per_worker
        on_cpu = self.device.startswith("cpu")
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 and not on_cpu else 0.0

    def _workers(self, ray, gpus: float) -> int:
        if self.options.workers is not None:
            return self.options.workers
        return max(1, int(ray.cluster_resources().get("GPU", 0) // gpus)) if gpus else 1


DATA_SETTINGS = {
    "enable_progress_bars": False,  # icdedit's own progress, one display per run
    "max_errored_blocks": -1,  # a chunk whose retries ran out is dropped, and recorded failed by the driver
    "max_consecutive_actor_init_deaths": 2,  # actors that die loading the model: say so, not loop
}


class _MainThreadStdout:
    """sys.stdout for the main thread alone: what other threads print (Ray's listener prints the
    raylet's notices, "a worker died ...", to stdout) goes to stderr, so that stdout keeps
    `--json`'s one object."""

    def __init__(self, stdout, stderr):
        self._stdout, self._stderr = stdout, stderr

    def _stream(self):
        return self._stdout if threading.current_thread() is threading.main_thread() else self._stderr

    def write(self, text: str) -> int:
        return self._stream().write(text)

    def flush(self) -> None:
        self._stream().flush()

    def __getattr__(self, name: str):
        return getattr(self._stdout, name)


@contextmanager
def _others_to_stderr():
    saved = sys.stdout
    sys.stdout = _MainThreadStdout(saved, sys.stderr)
    try:
        yield
    finally:
        sys.stdout = saved


@contextmanager
def _ray_backend_quiet():
    """Ray's C++ core started without its notices on this terminal: RAY_BACKEND_LOG_LEVEL for
    the start (unless the person set it), and its one start-up line ("Set ray log level ..."),
    which it prints on file descriptor 2 whatever the level, caught in a file and shown only if
    the start fails."""
    chosen = "RAY_BACKEND_LOG_LEVEL" in os.environ
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    sys.stderr.flush()
    saved = os.dup(2)
    caught = tempfile.TemporaryFile()
    failed = True
    try:
        os.dup2(caught.fileno(), 2)
        yield
        failed = False
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        if failed:
            caught.seek(0)
            sys.stderr.write(caught.read().decode(errors="replace"))
        caught.close()
        if not chosen:
            os.environ.pop("RAY_BACKEND_LOG_LEVEL", None)


def _resources_line(ray) -> str:
    resources = ray.cluster_resources()
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    return f"{nodes} node(s), {resources.get('CPU', 0):g} CPU(s), {resources.get('GPU', 0):g} GPU(s)"


def _worker_error(error: dict) -> IcdEditError:
    """An actor's error, as the driver raises it: its class (so its exit code), message and hint."""
    kind = getattr(errors, error["kind"], IcdEditError)
    kind = kind if isinstance(kind, type) and issubclass(kind, IcdEditError) else IcdEditError
    return kind(error["message"], error["hint"])


def _driver_error(exc: Exception) -> Exception:
    """An error the workers raised, as the driver reports it: icdedit's own (the model did not
    load: missing weights, a bad device) as itself, anything else as it came."""
    seen = exc
    while seen is not None:
        if isinstance(seen, IcdEditError):
            return seen
        cause = getattr(seen, "cause", None)
        seen = cause if isinstance(cause, BaseException) else seen.__cause__
    return exc
