"""One edit path, one runner, one run context: the behaviour that every command now shares
(the same run flags, batch rows written as `edit` writes them, out of memory by type)."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from icdedit.cli import COMMANDS, app
from icdedit.reporting import Reporter
from icdedit.run_context import is_out_of_memory
from icdedit.runner import Report, run_many

from .conftest import make_photo

runner = CliRunner()
SRC, TGT = "a photo of a cat", "a photo of a tiger"
RUN_FLAGS = ("--device", "--dtype", "--attention", "--cuda-graphs", "--compile", "--preview")
MODEL_COMMANDS = ("invert", "reconstruct", "edit", "batch", "generate", "ui")


def run(*args):
    return runner.invoke(app, [*map(str, args)])


def _option_help(command: str) -> dict[str, str]:
    """Each option's help text, as click holds it (independent of the terminal's width)."""
    import typer.main

    click_command = typer.main.get_command(app).commands[command]
    return {opt: param.help for param in click_command.params for opt in getattr(param, "opts", [])}


def test_every_model_running_command_takes_the_same_run_flags_with_the_same_help():
    helps = {command: _option_help(command) for command in MODEL_COMMANDS}
    for flag in RUN_FLAGS:
        texts = {command: helps[command].get(flag) for command in MODEL_COMMANDS}
        assert None not in texts.values(), (flag, texts)
        assert len(set(texts.values())) == 1, (flag, texts)


def test_commands_are_registered_in_one_place():
    assert [c.callback for c in app.registered_commands] == list(COMMANDS)
    assert len(COMMANDS) == len({f.__name__ for f in COMMANDS}) == 11  # info included


def _mask(size=(64, 64)) -> Image.Image:
    mask = Image.new("L", size)
    ImageDraw.Draw(mask).ellipse((16, 16, 48, 48), fill=255)
    return mask


def test_a_batch_row_is_written_as_edit_writes_it_mask_outline_and_all(tmp_path, monkeypatch, tiny_model):
    """The same photo, prompts, mask and seed through `edit --side-by-side` and a batch row with
    --side-by-side: the same edit and the same side-by-side (the mask outlined on the original)."""
    monkeypatch.chdir(tmp_path)
    make_photo(64, 64, seed=5).save("photo.png")
    _mask().save("mask.png")
    edit = run("edit", "photo.png", "-m", tiny_model, "-s", SRC, "-t", TGT, "--mask", "mask.png", "-o", "e.png",
               "--side-by-side", "--seed", "2")  # fmt: skip
    assert edit.exit_code == 0, edit.output
    (tmp_path / "rows.csv").write_text(f"image,src,tgt,mask,seed,output\nphoto.png,{SRC},{TGT},mask.png,2,b.png\n")
    batch = run("batch", "rows.csv", "-m", tiny_model, "--out", "out", "--side-by-side", "--json")
    assert batch.exit_code == 0, batch.output
    for ours, theirs in (("e.png", "out/b.png"), ("e-side-by-side.png", "out/b-side-by-side.png")):
        assert np.array_equal(np.asarray(Image.open(ours)), np.asarray(Image.open(theirs))), ours
    original = np.asarray(Image.open("photo.png")).astype(int)
    left = np.asarray(Image.open("out/b-side-by-side.png")).astype(int)[:, :64]
    assert (np.abs(left - original).sum(-1) > 0).sum() > 20  # the outline is drawn on the original


def test_batch_warns_about_truncated_prompts_as_edit_does(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    make_photo(64, 64).save("photo.png")
    long = " ".join(["cat"] * 90)
    edit = run("edit", "photo.png", "-m", tiny_model, "-s", long, "-t", TGT, "-o", "e.png")
    batch = run("batch", "photo.png", "-m", tiny_model, "-s", long, "-t", TGT, "--out", "out")
    assert edit.exit_code == 0 and batch.exit_code == 0, batch.output
    edit_warnings = [line for line in edit.stderr.splitlines() if "truncated" in line]
    batch_warnings = [line for line in batch.stderr.splitlines() if "truncated" in line]
    assert edit_warnings and batch_warnings == edit_warnings
    (record,) = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert "truncated" in record["warning"]


def test_amplify_as_a_factor_is_the_derived_words_at_that_factor(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    make_photo(64, 64, seed=1).save("photo.png")
    common = ["edit", "photo.png", "-m", tiny_model, "-s", SRC, "-t", TGT, "--json"]
    factor = json.loads(run(*common, "--amplify", "7", "-o", "f.png").stdout)
    words = json.loads(run(*common, "--amplify", "tiger=7", "-o", "w.png").stdout)
    assert factor["words"][0]["amplify"] == {"tiger": 7.0} == words["words"][0]["amplify"]
    assert factor["settings"]["amplify"] == 7.0
    assert np.array_equal(np.asarray(Image.open("f.png")), np.asarray(Image.open("w.png")))
    bad = run(*common, "--amplify", "70", "-o", "x.png")
    assert bad.exit_code == 2 and bad.stderr.count("\n") == 1 and "--amplify '70'" in bad.stderr


def test_a_presets_model_chooses_the_model_of_a_batch_as_of_an_edit(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    make_photo(64, 64).save("photo.png")
    (tmp_path / "mine.yaml").write_text(f"model: {tiny_model}\nguidance: 9\n")
    result = run("batch", "photo.png", "-s", SRC, "-t", TGT, "--preset", "mine.yaml", "--out", "out", "--json")
    assert result.exit_code == 0, result.output
    (record,) = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert record["status"] == "done" and record["settings"]["guidance"] == 9.0


# -- the runner: out of memory recognised by type -----------------------------------------------------
class _Item:
    def __init__(self, number, folder):
        self.number, self.output, self.problem = number, folder / f"{number}.txt", None

    key = "k"

    def describe(self) -> dict:
        return {}


class _Work:
    """Runs groups; a group of more than one item runs out of memory (or raises `error`)."""

    def __init__(self, error):
        self.error, self.groups = error, []

    def load(self, item):
        return None

    def group_key(self, item, loaded, editor):
        return 0

    def run(self, editor, group):
        self.groups.append([item.number for item, _ in group])
        if len(group) > 1:
            raise self.error
        return [item.number for item, _ in group]

    def finish(self, editor, item, loaded, result):
        item.output.write_text(str(result))
        return {"result": result}


def test_out_of_memory_is_known_by_type_and_the_group_runs_one_by_one(tmp_path):
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory")) and is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2 GiB"))
    items = [_Item(n, tmp_path) for n in (1, 2, 3)]
    work = _Work(torch.OutOfMemoryError("CUDA out of memory"))
    summary, path = run_many(
        items, work, out=tmp_path, shard=None, get_editor=object, reporter=Reporter(), label="x", batch_size=3
    )
    assert work.groups == [[1, 2, 3], [1], [2], [3]] and summary.done == [1, 2, 3]
    assert [r["result"] for r in Report(path).records.values()] == [1, 2, 3]


def test_a_runtime_error_that_only_mentions_memory_is_a_bug_not_a_fallback(tmp_path):
    items = [_Item(n, tmp_path) for n in (1, 2)]
    work = _Work(RuntimeError("out of memory (but not torch's: a message is not a type)"))
    with pytest.raises(RuntimeError, match="message is not a type"):
        run_many(items, work, out=tmp_path, shard=None, get_editor=object, reporter=Reporter(), label="x", batch_size=2)
    assert work.groups == [[1, 2]]


def test_one_amplify_reader_for_flags_and_cells():
    from icdedit.word_args import parse_amplify_values, parse_blend

    assert parse_amplify_values(["bear=4", "hat=2"]) == ([("bear", 4.0), ("hat", 2.0)], None)
    assert parse_amplify_values(["none"]) == ([], None) and parse_amplify_values(["3"]) == (None, 3.0)
    assert (
        parse_blend(("pug dog", "bear")) == [("pug", "bear"), ("dog", "bear")] == parse_blend("[['pug dog', 'bear']]")
    )
    with pytest.raises(ValueError, match=re.escape("amplify 'x'")):
        parse_amplify_values(["x"])
