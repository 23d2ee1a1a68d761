"""Nothing lost, nothing written where it should not be (#23): `batch` writes only inside --out,
never replaces a file that is not its own, takes its results file for itself, and checks what
it resumes; `eval` never writes over its own pairs file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import assert_clean_error, batch_args, make_photo, run

SRC, TGT = "a photo of a cat", "a photo of a dog"
WORKTREE = Path(__file__).resolve().parents[1]


@pytest.fixture
def photos(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, name in enumerate(["room.png", "sea.png"]):
        make_photo(64, 64, seed=i).save(folder / name)
    return folder


def manifest(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps({"src": SRC, "tgt": TGT, **row}) + "\n" for row in rows))
    return path


def records(out: Path, name: str = "results.jsonl") -> dict[int, dict]:
    return {r["item"]: r for r in map(json.loads, (out / name).read_text().splitlines())}


def batch(inputs, out, tiny_model, *extra):
    return run(*batch_args(inputs, out, model=tiny_model, extra=extra))


# -- 1. writes outside --out, and overwrites ---------------------------------------------------------
def test_an_output_cell_outside_out_is_a_row_problem_and_nothing_is_written_there(photos, tmp_path, tiny_model):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "linked").symlink_to(elsewhere, target_is_directory=True)
    before = (photos / "room.png").read_bytes()
    rows = [
        {"image": "room.png", "output": "../imgs/room.png"},  # would replace the input photo
        {"image": "room.png", "output": str(victim.with_suffix(".png"))},  # an absolute path elsewhere
        {"image": "room.png", "output": "sub/../../x.png"},  # `..` out of --out
        {"image": "room.png", "output": "linked/y.png"},  # a symlinked folder pointing out of --out
        {"image": "sea.png", "output": "sub/ok.png"},  # inside --out: edited
    ]
    victim.with_suffix(".png").write_bytes(b"not yours")
    result = batch([manifest(photos / "m.jsonl", rows)], out, tiny_model, "--json")
    assert result.exit_code == 1, result.output
    found = records(out)
    for number in (1, 2, 3, 4):
        assert found[number]["status"] == "failed"
        assert "is outside --out" in found[number]["error"], found[number]
    assert found[5]["status"] == "done" and (out / "sub" / "ok.png").is_file()
    assert (photos / "room.png").read_bytes() == before
    assert victim.with_suffix(".png").read_bytes() == b"not yours"
    assert not (tmp_path / "x.png").exists() and list(elsewhere.iterdir()) == []


def test_a_grid_cell_folder_linked_out_of_out_is_a_row_problem(photos, tmp_path, tiny_model):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "guidance3").symlink_to(elsewhere, target_is_directory=True)
    args = [photos / "room.png", "-s", SRC, "-t", TGT, "--grid", "guidance=3,5", "--json"]
    result = batch(args[:1], out, tiny_model, *args[1:])
    assert result.exit_code == 1, result.output
    found = records(out)
    assert found[1]["status"] == "failed" and "is outside --out" in found[1]["error"]
    assert found[2]["status"] == "done" and (out / "guidance5").is_dir()
    assert list(elsewhere.iterdir()) == []


def test_eval_refuses_to_write_over_its_own_pairs_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_photo(64, 64).save(tmp_path / "a.png")
    pairs = tmp_path / "in.csv"
    pairs.write_text("source,edit,target\na.png,a.png,a photo\n")
    before = pairs.read_bytes()
    result = run("eval", pairs, "-o", pairs, "--overwrite", "--metrics", "psnr", "--device", "cpu")
    assert_clean_error(result, "in.csv", "is an input file")
    assert pairs.read_bytes() == before


def test_a_file_at_an_output_path_that_is_not_this_runs_is_a_row_problem_until_overwrite(photos, tmp_path, tiny_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.png").write_bytes(b"someone's file")
    rows = [{"image": "room.png", "output": "mine.png"}, {"image": "sea.png", "output": "sea-edit.png"}]
    m = manifest(photos / "m.jsonl", rows)
    result = batch([m], out, tiny_model, "--json")
    assert result.exit_code == 1, result.output
    found = records(out)
    assert found[1]["status"] == "failed" and "exists and is not this run's" in found[1]["error"]
    assert "--overwrite replaces it" in found[1]["error"]
    assert (out / "mine.png").read_bytes() == b"someone's file"
    assert found[2]["status"] == "done"
    # a rerun replaces this run's own outputs when their item changed, never the foreign file
    again = batch([m], out, tiny_model, "--json", "--seed", "5")
    assert again.exit_code == 1 and records(out)[2]["status"] == "done"
    assert (out / "mine.png").read_bytes() == b"someone's file"
    replaced = batch([m], out, tiny_model, "--json", "--overwrite")
    assert replaced.exit_code == 0, replaced.output
    assert (out / "mine.png").read_bytes()[:4] == b"\x89PNG"


def test_a_symlinked_results_file_is_refused_and_its_target_untouched(photos, tmp_path, tiny_model):
    out = tmp_path / "out"
    out.mkdir()
    target = tmp_path / "elsewhere.jsonl"
    target.write_text("precious\n")
    (out / "results.jsonl").symlink_to(target)
    before = sorted(p.name for p in out.iterdir())
    result = batch([photos], out, tiny_model, "-s", SRC, "-t", TGT)
    assert_clean_error(result, str(out / "results.jsonl"), "symbolic link", folder=out, before=before, hint=True)
    assert target.read_text() == "precious\n"


@pytest.mark.parametrize("inputs", [["imgs"], ["imgs/*.png"], ["**/*.png"]])
def test_an_out_folder_that_the_inputs_reach_is_refused_before_anything_runs(photos, tmp_path, tiny_model, inputs):
    before = sorted(p.name for p in photos.iterdir())
    out = "imgs" if inputs != ["**/*.png"] else "imgs/edits"
    result = batch(inputs, out, tiny_model, "-s", SRC, "-t", TGT)
    assert_clean_error(result, f"--out {out}", "would edit its own outputs", code=2, folder=photos, before=before)


# -- 2. two processes on one folder ------------------------------------------------------------------
def batch_command(inputs, out, tiny_model, *extra) -> list[str]:
    return [
        sys.executable,
        "-m",
        "icdedit",
        *map(str, batch_args(inputs, out, model=tiny_model, size=256, extra=extra)),
    ]


def env() -> dict:
    return {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(WORKTREE)}


def test_a_second_run_on_a_folder_in_use_fails_at_once_naming_the_other_process(tmp_path, tiny_model):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        make_photo(64, 64, seed=i).save(folder / f"p{i}.png")
    out = tmp_path / "out"
    cmd = batch_command([folder], out, tiny_model, "-s", SRC, "-t", TGT, "--json")
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env(), cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and first.poll() is None:
        if (out / "results.jsonl").is_file() and '"done"' in (out / "results.jsonl").read_text():
            break
        time.sleep(0.02)
    assert first.poll() is None, "the first run should still be running"
    second = run(*batch_args([folder], out, model=tiny_model, size=256, extra=["-s", SRC, "-t", TGT]))
    assert_clean_error(second, f"--out {out}", "in use by another run", f"pid {first.pid}", hint=True)
    stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert sorted(json.loads(stdout)["done"]) == list(range(1, 7))  # every item done once, by the first run
    lines = (out / "results.jsonl").read_text().splitlines()
    assert sorted(json.loads(line)["item"] for line in lines) == list(range(1, 7))
    # the lock goes with its process: a later run starts (and finds everything done)
    later = run(*batch_args([folder], out, model=tiny_model, size=256, extra=["-s", SRC, "-t", TGT, "--json"]))
    assert later.exit_code == 0 and json.loads(later.stdout)["skipped"] == list(range(1, 7))


def test_start_up_cleanup_removes_only_temp_files_of_dead_processes_in_every_output_folder(
    photos, tmp_path, tiny_model
):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        out = tmp_path / "out"
        cell = out / "guidance3"
        cell.mkdir(parents=True)
        theirs = out / f".0002-x.png.{live.pid}-abc123{'.part'}.png"  # another shard's file in flight
        stale = out / f".0001-x.png.{dead.pid}-abc123.part.png"  # a killed run's
        stale_cell = cell / f".0001-room-a-photo-of-a-dog.png.{dead.pid}-zz9_.part.png"  # a killed grid run's
        for path in (theirs, stale, stale_cell):
            path.write_bytes(b"half")
        args = [photos / "room.png"]
        result = batch(args, out, tiny_model, "-s", SRC, "-t", TGT, "--grid", "guidance=3", "--shard", "1/1")
        assert result.exit_code == 0, result.output
        assert theirs.is_file(), "a live process's temp file is never removed"
        assert not stale.exists() and not stale_cell.exists()
    finally:
        live.kill()
        live.wait()


# -- 3. resume checks what it trusts -------------------------------------------------------------------
def test_a_done_item_whose_output_was_truncated_is_redone(photos, tmp_path, tiny_model):
    out = tmp_path / "out"
    args = ["-s", SRC, "-t", TGT, "--json"]
    assert batch([photos], out, tiny_model, *args).exit_code == 0
    outputs = {n: Path(r["output"]) for n, r in records(out).items()}
    outputs[1].write_bytes(b"")  # truncated to 0 bytes
    with open(outputs[2], "r+b") as handle:  # cut short, its header still readable
        handle.truncate(outputs[2].stat().st_size // 2)
    again = batch([photos], out, tiny_model, *args)
    assert again.exit_code == 0, again.output
    assert sorted(json.loads(again.stdout)["done"]) == [1, 2]
    from PIL import Image

    for path in outputs.values():
        with Image.open(path) as image:
            image.load()
            assert image.size == (64, 64)


def test_a_damaged_results_line_is_skipped_with_a_note(photos, tmp_path, tiny_model):
    out = tmp_path / "out"
    args = ["-s", SRC, "-t", TGT, "--json"]
    assert batch([photos], out, tiny_model, *args).exit_code == 0
    lines = (out / "results.jsonl").read_bytes().splitlines(keepends=True)
    (out / "results.jsonl").write_bytes(b"\xff\xfe not utf-8 \x80\n" + lines[1])  # item 1's line damaged
    again = batch([photos], out, tiny_model, *args)
    assert "Traceback" not in again.output
    assert "1 damaged line(s)" in again.stderr and "results.jsonl" in again.stderr
    report = json.loads(again.stdout)
    # the report no longer proves item 1's file is this folder's own: it is not replaced unasked
    assert again.exit_code == 1 and report["skipped"] == [2] and "not this run's" in report["failed"]["1"]
    redone = batch([photos], out, tiny_model, *args, "--overwrite")
    assert redone.exit_code == 0 and sorted(json.loads(redone.stdout)["done"]) == [1, 2]
    assert sorted(records(out)) == [1, 2]


# -- claims: an output path is this folder's from the moment its item starts ------------------------
class _Note:
    """A runner item with no model: its output is a text file."""

    def __init__(self, number: int, output: Path):
        self.number, self.output, self.problem = number, output, None

    key = property(lambda self: str(self.number))

    def describe(self) -> dict:
        return {}


class _HalfWrites:
    """Writes item 1's output, then fails it (a second file that cannot be written), unless `healthy`."""

    def __init__(self, healthy: bool):
        self.healthy = healthy

    def load(self, item):
        return None

    def group_key(self, item, loaded, editor):
        return item.number

    def chunk_key(self, item):
        return item.number

    def run(self, editor, group):
        return [f"made {item.number}" for item, _ in group]

    def finish(self, editor, item, loaded, result) -> dict:
        item.output.write_text(result)
        if item.number == 1 and not self.healthy:
            raise OSError(28, "No space left on device")
        return {}


def test_an_item_that_failed_after_writing_is_redone_on_resume_and_a_foreign_file_is_still_refused(tmp_path):
    from icdedit.reporting import Reporter
    from icdedit.runner import run_many

    out = tmp_path / "out"
    out.mkdir()
    (out / "3.txt").write_text("someone else's")
    items = [_Note(n, out / f"{n}.txt") for n in (1, 2, 3)]
    common = dict(out=out, shard=None, get_editor=object, reporter=Reporter(), label="notes")
    summary, _ = run_many(items, _HalfWrites(healthy=False), **common)
    assert summary.done == [2] and sorted(summary.failed) == [1, 3]
    assert "No space left" in summary.failed[1] and "not this run's" in summary.failed[3]
    first = records(out)
    assert first[1]["status"] == "failed" and first[1]["claimed"] and "claimed" not in first[3]
    summary, _ = run_many(items, _HalfWrites(healthy=True), **common)
    assert summary.done == [1] and summary.skipped == [2] and list(summary.failed) == [3]
    assert (out / "1.txt").read_text() == "made 1" and (out / "3.txt").read_text() == "someone else's"
    assert [r["status"] for r in records(out).values()] == ["done", "done", "failed"]
