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
import threading
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from . import errors
from .errors import IcdEditError, UsageError, first_line
from .reporting import Reporter
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
    """One Ray actor: the model loaded once, then chunks of items run by `runner.execute`."""

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
        return {"chunk": chunks, "outcomes": outcomes, "error": [self.error] * len(chunks)}

    def run_chunk(self, index: int) -> str:
        items, outcomes = self.job.chunks[index], []
        try:
            execute(items, self.job.work, lambda: self.editor, self.job.batch_size, outcomes.append)
        except Exception as exc:  # a bug: the chunk's other items fail with it, the run goes on
            reason = f"error in a Ray worker: {type(exc).__name__}: {first_line(exc)} (--engine local --debug: where)"
            ended = {outcome.number for outcome in outcomes}
            outcomes += [Outcome(i.number, "failed", 0.0, {"error": reason}) for i in items if i.number not in ended]
        return json.dumps([asdict(outcome) for outcome in outcomes], default=str)


class RayEngine:
    """Runs a run's items on Ray Data actors (runner.Engine)."""

    def __init__(self, options: EngineOptions, device: str, reporter: Reporter):
        self.options, self.device, self.reporter = options, device, reporter

    def run_items(self, items: list, work: Work, get_editor: Callable[[], object], batch_size: int, run: Run) -> None:
        chunks = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
        run.started(items)
        with _others_to_stderr():
            returned = self._run_chunks(chunks, work, get_editor, batch_size, run)
        lost = [item for index, chunk in enumerate(chunks) if index not in returned for item in chunk]
        for item in lost:
            reason = f"its Ray worker stopped while running it, {RETRIES + 1} times (a lost node, or out of memory)"
            run.record(Outcome(item.number, "failed", 0.0, {"error": reason}))

    def _run_chunks(self, chunks, work, get_editor, batch_size, run: Run) -> set[int]:
        """Every chunk through the actors, each outcome recorded as it comes; the chunks returned."""
        ray, started_here = self._connect()
        returned: set[int] = set()
        try:
            stream = self._dataset(ray, WorkerJob(work, get_editor, chunks, batch_size), len(chunks))
            for row in stream.iter_rows():
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
            if started_here:
                ray.shutdown()  # a local Ray of this run: its actors end with it (also on Ctrl-C)
        return returned

    def _connect(self):
        """Ray, connected: the cluster at --address, else Ray's own choice (RAY_ADDRESS, a running
        cluster), else a Ray started here. (ray, whether this run connected it)."""
        ray = require_ray()
        if ray.is_initialized():  # the caller's own Ray (a library user, the tests)
            return ray, False
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")  # Ray's C++ notices, not for this terminal
        quiet = dict(include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
        address = self.options.address
        with _stderr_silenced():  # Ray's C++ start-up line ("Set ray log level ...")
            if address in (None, "auto") and not os.environ.get("RAY_ADDRESS"):
                try:
                    ray.init(address="auto", **quiet)
                except ConnectionError:
                    if address == "auto":
                        raise UsageError(
                            "--address auto: no Ray cluster is running on this machine", "start one: ray start --head"
                        ) from None
                    ray.init(**quiet)  # none running: a Ray of this run's own
            else:
                ray.init(address=address, **quiet)
        self.reporter.note(f"ray: {_resources_line(ray)}")
        return ray, True

    def _dataset(self, ray, job: WorkerJob, count: int):
        import ray.data

        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False  # icdedit's own progress, one line per run
        context.max_errored_blocks = -1  # a chunk whose retries ran out: recorded failed by the driver
        context.max_consecutive_actor_init_deaths = 2  # a model that does not load: say so, not loop
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        gpus = self._gpus_per_worker(ray)
        workers = self._workers(ray, gpus)
        self.reporter.note(f"ray: {workers} worker(s), {gpus:g} GPU(s) each, {count} chunk(s)")
        rows = ray.data.from_items([{"chunk": index} for index in range(count)], override_num_blocks=count)
        with warnings.catch_warnings():  # Ray 2.60 takes the retry bound only as a "remote arg" (deprecated)
            warnings.simplefilter("ignore")
            return rows.map_batches(
                ChunkWorker,
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=workers),
                fn_constructor_kwargs={"job": ray.put(job)},
                num_gpus=gpus,
                num_cpus=1,
                max_restarts=-1,  # a lost actor comes back (on another node, if its node is gone)
                max_task_retries=RETRIES,
            )

    def _gpus_per_worker(self, ray) -> float:
        if self.options.gpus_per_worker is not None:
            return self.options.gpus_per_worker
        on_cpu = self.device.startswith("cpu")
        return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 and not on_cpu else 0.0

    def _workers(self, ray, gpus: float) -> int:
        if self.options.workers is not None:
            return self.options.workers
        return max(1, int(ray.cluster_resources().get("GPU", 0) // gpus)) if gpus else 1


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
def _stderr_silenced():
    """File descriptor 2 pointed at /dev/null for a moment: what Ray's C++ core prints there
    cannot be turned off from Python. Python's own errors are exceptions, and still raised."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


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
