"""`--engine ray`: batch and generate --prompts on Ray Data actors, on a local Ray of 2 CPUs.

What a Ray run must equal is the local engine's run of the same command: every image, pixel for
pixel, every record, the summary and the exit code. On the CPU, float32 results depend on the
thread count (a reduction split in two rounds differently), so the local runs here use the
actors' one thread (`one_thread`): the same code, inputs, device and threads give the same bits.

The tests that start Ray (about 3 minutes in all on 2 cores) are marked `slow`: `make test` runs
them, the source distribution's run leaves them out. One Ray serves the in-process tests; the
tests that stop a driver or kill a worker run the command in a process (and a Ray) of its own,
then run it again to see every row done exactly once.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from .helpers import assert_clean_error, batch_args, generate_args, make_photo, one_json_object, run

ACTOR_THREADS = 1


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the module's in-process runs (the engine uses a Ray already started)."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"OMP_NUM_THREADS": str(ACTOR_THREADS)}},
    )
    yield ray
    ray.shutdown()


@contextmanager
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(ACTOR_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def photos_folder(root: Path, count: int) -> Path:
    folder = root / "photos"
    folder.mkdir(exist_ok=True)
    for i in range(count):
        make_photo(64 + 32 * (i % 2), 64, seed=i).save(folder / f"p{i}.png")
    return folder


def manifest(root: Path, rows: list[dict]) -> Path:
    path = root / "edits.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


# where and how fast (the key holds the output's path): the rest of a record is what was made
RUN_FIELDS = ("seconds", "output", "bytes", "key")


def assert_same_runs(local: Path, remote: Path) -> None:
    """Both folders hold the same images, pixel for pixel, and the same records, one per item."""
    mine, theirs = records(local), records(remote)
    assert [r["item"] for r in theirs] == [r["item"] for r in mine]
    for a, b in zip(mine, theirs):
        assert {k: v for k, v in a.items() if k not in RUN_FIELDS} == {
            k: v for k, v in b.items() if k not in RUN_FIELDS
        }
        if a["status"] == "done":
            assert Path(b["output"]).relative_to(remote) == Path(a["output"]).relative_to(local)
            assert np.array_equal(pixels(a["output"]), pixels(b["output"])), a["output"]
    names = sorted(p.relative_to(local) for p in local.rglob("*.png"))
    assert names and names == sorted(p.relative_to(remote) for p in remote.rglob("*.png"))


def run_both(tmp_path, args: list[str], ray_flags=("--engine", "ray", "--workers", "2")):
    """The command locally (one thread) and through Ray: (local folder, Ray folder, both summaries)."""
    results = {}
    for name, extra in (("local", ()), ("ray", ray_flags)):
        out = tmp_path / name
        with one_thread():
            result = run(*[str(a).replace("{out}", str(out)) for a in args], *extra, "--json")
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        assert len(lines) == 1, result.output
        results[name] = (result.exit_code, json.loads(lines[0]))
    assert results["ray"][0] == results["local"][0]
    summaries = [
        {k: v for k, v in s.items() if k not in ("report", "seconds", "seconds_per_item")} for _, s in results.values()
    ]
    assert summaries[0] == summaries[1]
    return tmp_path / "local", tmp_path / "ray", results["local"]


# -- the same outputs ------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_manifest_with_bad_rows_through_ray_equals_the_local_run(ray_cluster, tmp_path, tiny_model):
    folder = photos_folder(tmp_path, 3)
    rows = [
        {"image": "p0.png", "src": "a photo of a cat", "tgt": "a photo of a dog", "blend": "cat dog"},
        {"image": "missing.png", "src": "a photo of a cat", "tgt": "a photo of a dog"},
        {"image": "p1.png", "src": "a photo of a cat", "tgt": "a red photo of a cat", "seed": 3},
        {"image": "p2.png", "src": "a photo of a cat", "tgt": "a photo of a dog", "guidance": "lots"},
        {"image": "p2.png", "src": "a photo of a dog", "tgt": "a photo of a bear", "tau": 0.5},
    ]
    path = manifest(tmp_path, rows)
    local, remote, (code, summary) = run_both(
        tmp_path, batch_args([path], "{out}", model=tiny_model, extra=["--images", folder])
    )
    assert code == 1 and sorted(summary["failed"]) == ["2", "4"] and summary["done"] == [1, 3, 5]
    assert_same_runs(local, remote)


@pytest.mark.slow
def test_a_grid_through_ray_equals_the_local_run(ray_cluster, tmp_path, tiny_model):
    folder = photos_folder(tmp_path, 2)
    grid = ["--grid", "guidance=7,19", "--grid", "cross_replace=0.2,0.6"]
    extra = ["-s", "a photo of a cat", "-t", "a photo of a dog", *grid]
    local, remote, (code, summary) = run_both(tmp_path, batch_args([folder], "{out}", model=tiny_model, extra=extra))
    assert code == 0 and len(summary["done"]) == 8
    assert_same_runs(local, remote)


@pytest.mark.slow
def test_generate_prompts_through_ray_equals_the_local_run(ray_cluster, tmp_path, tiny_model):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a red fox\na lighthouse at dusk\n\na bowl of fruit\n")
    args = generate_args(model=tiny_model, extra=["--prompts", prompts, "--out", "{out}", "--num", "2"])
    local, remote, (code, summary) = run_both(tmp_path, args)
    assert len(summary["done"]) >= 6
    assert_same_runs(local, remote)


@pytest.mark.slow
def test_a_model_the_workers_cannot_load_ends_the_run_with_its_one_line_error(ray_cluster, tmp_path, tiny_model):
    broken = tmp_path / "broken-model"
    shutil.copytree(tiny_model.parent, broken)
    lora = next(broken.glob("*forward*.safetensors"))
    lora.write_bytes(b"not a safetensors file")  # read by the workers alone, when they load the model
    folder = photos_folder(tmp_path, 2)
    out = tmp_path / "out"
    extra = ["-s", "a cat", "-t", "a dog", "--engine", "ray", "-q"]  # -q: no `ray:` notes
    assert_clean_error(run(*batch_args([folder], out, model=broken / "model.yaml", extra=extra)), lora.name)
    assert records(out) == []  # nothing made, nothing claimed: the same command starts afresh


@dataclass(frozen=True)
class Note:
    """A runner item with no model: its output is a text file."""

    number: int
    output: Path
    problem: str | None = None

    @property
    def key(self) -> str:
        return str(self.number)

    def describe(self) -> dict:
        return {}


@dataclass
class DiesOnTwo:
    """A Work whose worker process dies whenever it runs item 2 (a row that is out of memory each
    time), each item a group of its own; `healthy` runs item 2 like the others."""

    healthy: bool = False

    def load(self, item):
        return None

    def group_key(self, item, loaded, editor):
        return item.number

    def chunk_key(self, item):
        return "all"

    def run(self, editor, group):
        if not self.healthy and any(item.number == 2 for item, _ in group):
            os._exit(3)
        return [f"made {item.number}" for item, _ in group]

    def finish(self, editor, item, loaded, result) -> dict:
        item.output.write_text(result)
        return {}


@pytest.mark.slow
def test_a_row_that_kills_its_worker_every_time_fails_after_the_retries_and_the_rest_are_done(
    ray_cluster, tmp_path, monkeypatch
):
    from ray import cloudpickle

    from icdedit import ray_engine
    from icdedit.ray_engine import EngineOptions, RayEngine
    from icdedit.reporting import Reporter
    from icdedit.runner import run_many

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers need not import the tests
    monkeypatch.setattr(ray_engine, "RETRIES", 1)  # each retry restarts a worker: seconds
    out = tmp_path / "out"
    items = [Note(n, out / f"{n}.txt") for n in range(1, 5)]
    engine = RayEngine(EngineOptions("ray", workers=2), "cpu", Reporter())
    common = dict(out=out, shard=None, get_editor=object, reporter=Reporter(), label="notes", batch_size=2)
    summary, _ = run_many(items, DiesOnTwo(), engine=engine, **common)
    # chunks [1, 2] and [3, 4]: item 1 was written before item 2 killed the worker, twice
    assert sorted(summary.done) == [3, 4] and sorted(summary.failed) == [1, 2]
    assert "tried 2 times" in summary.failed[2]
    assert [(r["item"], r["status"]) for r in records(out)] == [(1, "failed"), (2, "failed"), (3, "done"), (4, "done")]
    assert (out / "1.txt").read_text() == "made 1" and not (out / "2.txt").exists()
    # the same run again: item 1's file is this folder's own (it had started), so it is redone, not refused
    summary, _ = run_many(items, DiesOnTwo(healthy=True), **common)
    assert sorted(summary.done) == [1, 2] and sorted(summary.skipped) == [3, 4] and not summary.failed
    assert [r["status"] for r in records(out)] == ["done"] * 4


# -- stops, kills and resumes ----------------------------------------------------------------------
ROWS = 30  # enough that a fast machine is still mid-run when the test's signal lands


def batch_of(tmp_path: Path, tiny_model, out: Path) -> list[str]:
    """`batch` of ROWS photos (made once) into `out`, as the local engine runs it."""
    folder = tmp_path / "photos"
    if not folder.is_dir():
        photos_folder(tmp_path, ROWS)
    return batch_args([folder], out, model=tiny_model, extra=["-s", "a photo of a cat", "-t", "a photo of a dog"])


def ray_command(tmp_path: Path, tiny_model) -> tuple[list[str], Path]:
    """The batch through a Ray of its own (--address local), in a process of its own, as a user runs it."""
    out = tmp_path / "out"
    flags = ["--engine", "ray", "--workers", "2", "--address", "local", "--json"]
    return [sys.executable, "-m", "icdedit", *batch_of(tmp_path, tiny_model, out), *flags], out


def started(command: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": str(ACTOR_THREADS)}
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=cwd)


def wait_for_done(process: subprocess.Popen, out: Path, count: int, timeout: float = 180) -> int:
    """Waits until `count` items are recorded done (or the run ends); how many are."""
    deadline = time.monotonic() + timeout
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        report = out / "results.jsonl"
        done = report.read_text().count('"status": "done"') if report.is_file() else 0
        if done >= count:
            break
        time.sleep(0.05)
    return done


def finished(command: list[str], cwd: Path) -> dict:
    process = started(command, cwd)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr
    return json.loads(stdout)


def assert_every_row_done_once(out: Path, rows: int) -> None:
    final = records(out)
    assert [r["item"] for r in final] == list(range(1, rows + 1))
    assert all(r["status"] == "done" for r in final)
    for r in final:
        assert Image.open(r["output"]).size[0] > 0
    assert len(list(out.glob("*.png"))) == rows
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") and "lock" not in p.name]


@pytest.mark.slow
def test_a_driver_stopped_by_ctrl_c_then_killed_resumes_every_row_exactly_once(tmp_path, tiny_model):
    rows = ROWS
    command, out = ray_command(tmp_path, tiny_model)
    first = started(command, tmp_path)
    assert wait_for_done(first, out, 2) >= 2
    first.send_signal(signal.SIGINT)
    stdout, stderr = first.communicate(timeout=120)
    assert first.returncode == 130 and stdout.strip(), stderr
    summary = json.loads(stdout)
    assert summary["interrupted"] and summary["remaining"] == rows - len(summary["done"])
    assert "interrupted:" in stderr
    after_ctrl_c = {r["item"] for r in records(out) if r["status"] == "done"}
    assert 2 <= len(after_ctrl_c) < rows

    second = started(command, tmp_path)
    wait_for_done(second, out, len(after_ctrl_c) + 1)
    second.kill()  # kill -9: no handler runs, the report's last line may be cut off
    second.wait()
    after_kill = {r["item"] for r in records(out) if r["status"] == "done"}
    assert after_ctrl_c <= after_kill

    summary = finished(command, tmp_path)
    assert sorted(summary["skipped"]) == sorted(after_kill)
    assert sorted(summary["done"] + summary["skipped"]) == list(range(1, rows + 1))
    assert_every_row_done_once(out, rows)


def descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process under `pid` (Ray's workers are the raylet's children)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            try:
                found.append(
                    (child, (Path("/proc") / str(child) / "cmdline").read_bytes().replace(b"\0", b" ").decode())
                )
            except OSError:
                continue
            stack.append(child)
    return found


@pytest.mark.slow
def test_a_worker_killed_mid_run_loses_nothing_and_does_nothing_twice(tmp_path, tiny_model):
    rows = ROWS
    command, out = ray_command(tmp_path, tiny_model)
    process = started(command, tmp_path)
    assert wait_for_done(process, out, 1) >= 1
    workers = [pid for pid, line in descendants(process.pid) if "ChunkWorker" in line]
    assert workers, descendants(process.pid)
    os.kill(workers[0], signal.SIGKILL)
    done_at_kill = sum(r["status"] == "done" for r in records(out))
    stdout, stderr = process.communicate(timeout=300)
    assert done_at_kill < rows, "the kill should land mid-run"
    assert process.returncode == 0, stderr
    summary = json.loads(stdout)
    assert sorted(summary["done"]) == list(range(1, rows + 1)) and not summary["failed"]
    assert_every_row_done_once(out, rows)
    local = tmp_path / "local"
    with one_thread():  # and each image is the one the local engine makes
        one_json_object(run(*batch_of(tmp_path, tiny_model, local), "--json"))
    for record, mine in zip(records(out), records(local)):
        assert np.array_equal(pixels(record["output"]), pixels(mine["output"]))


# -- without Ray, and the flags' own problems (no Ray started) -------------------------------------
def test_without_ray_installed_the_engine_is_one_line_naming_the_extra(tmp_path, tiny_model, monkeypatch):
    folder = photos_folder(tmp_path, 1)
    for name in [m for m in sys.modules if m == "ray" or m.startswith("ray.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "out"
    extra = ["-s", "a cat", "-t", "a dog", "--engine", "ray"]
    assert_clean_error(run(*batch_args([folder], out, model=tiny_model, extra=extra)), "icdedit[ray]", code=2)
    assert not out.exists()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a fox\n")
    args = generate_args(model=tiny_model, extra=["--prompts", prompts, "--out", out, "--engine", "ray"])
    assert_clean_error(run(*args), "icdedit[ray]", code=2)


@pytest.mark.parametrize(
    "flags, fragment",
    [
        (["--workers", "2"], "only with --engine ray"),
        (["--engine", "spark"], "spark"),
        (["--engine", "ray", "--shard", "1/2"], "--shard"),
        (["--engine", "ray", "--gpus-per-worker", "-1"], "--gpus-per-worker"),
        (["--engine", "ray", "--device", "cuda:1"], "its own GPU"),
    ],
)
def test_engine_flags_that_cannot_work_are_usage_errors(tmp_path, tiny_model, flags, fragment):
    folder = photos_folder(tmp_path, 1)
    extra = ["-s", "a cat", "-t", "a dog", *flags]
    assert_clean_error(run(*batch_args([folder], tmp_path / "out", model=tiny_model, extra=extra)), fragment, code=2)


def test_the_ray_flags_belong_to_a_prompt_file(tiny_model):
    assert_clean_error(run(*generate_args("a fox", model=tiny_model, extra=["--engine", "ray"])), "--engine", code=2)


def test_chunks_keep_a_photos_cells_together_and_fill_up_to_the_batch_size():
    from icdedit.ray_engine import chunked

    class ByPhoto:
        def chunk_key(self, item):
            return item[0]

    a1, a2, b1, c1, c2, c3, d1 = items = ["a1", "a2", "b1", "c1", "c2", "c3", "d1"]
    assert chunked(items, ByPhoto(), 1) == [[item] for item in items]
    assert chunked(items, ByPhoto(), 2) == [[a1, a2], [b1], [c1, c2], [c3, d1]]
    assert chunked(items, ByPhoto(), 3) == [[a1, a2, b1], [c1, c2, c3], [d1]]
    assert chunked(items, ByPhoto(), 8) == [items]
