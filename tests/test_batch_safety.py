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
