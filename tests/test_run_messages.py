"""What long runs, interruptions, eval and edit's outputs tell a person (issue 24, sections 3 and 5):
progress lines where stderr is not a terminal (the CliRunner's is not), the summary after Ctrl-C,
eval's messages about what a folder is and which metrics were skipped, `edit --out DIR`, and the
labelled side-by-side and contact sheet. Tiny models on the CPU at 64 px."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from icdedit.cli.app import ProgressLines, duration, progress_line

from .helpers import assert_clean_error, batch_args, edit_args, generate_args, make_photo, one_json_object, run

LINE = re.compile(r"^\[\d+/\d+\] done \d+ failed \d+( skipped \d+)? [\d.]+ items/s( eta \d+(s|m\d\ds|h\d\dm))?$")


@pytest.fixture
def place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def progress_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("[")]


# -- progress lines ---------------------------------------------------------------------------------
def test_progress_line_format():
    counts = {"done": 11, "failed": 1, "skipped": 0}
    assert progress_line(12, 140, counts, 15.0) == "[12/140] done 11 failed 1 0.8 items/s eta 2m40s"
    # skipped items cost nothing: the rate and the time left count only the items worked on
    assert progress_line(12, 140, {"done": 2, "failed": 0, "skipped": 10}, 4.0) == (
        "[12/140] done 2 failed 0 skipped 10 0.5 items/s eta 4m16s"
    )
    assert progress_line(140, 140, {"done": 140, "failed": 0}, 70.0) == "[140/140] done 140 failed 0 2 items/s"
    assert [duration(s) for s in (0, 45.4, 160, 3900)] == ["0s", "45s", "2m40s", "1h05m"]


def test_progress_lines_every_n_items_and_every_t_seconds():
    lines, now = [], [0.0]
    display = ProgressLines(lines.append, every=5, seconds=30, clock=lambda: now[0])
    loading = display.add_task("loading tiny", total=1)
    display.update(loading, advance=1)  # a stage without a run's counts is not told
    task = display.add_task("editing", total=12)
    for n in range(1, 13):
        now[0] += 1 if n != 7 else 40  # item 7 took 40 s: told although 7 is not a multiple of 5
        display.update(task, advance=1, done=n, failed=0, skipped=0)
    assert [line.split()[0] for line in lines] == ["[1/12]", "[5/12]", "[7/12]", "[10/12]", "[12/12]"]
    assert all(LINE.match(line) for line in lines), lines


def test_batch_prints_progress_lines_when_stderr_is_not_a_terminal(place):
    folder = place / "photos"
    folder.mkdir()
    for i in range(3):
        make_photo(64, 64, seed=i).save(folder / f"p{i}.png")
    args = batch_args([folder], place / "out", extra=["--src", "a photo", "--tgt", "a photo of a dog"])
    result = run(*args)
    assert result.exit_code == 0, result.output
    lines = progress_lines(result.stderr)
    assert lines and all(LINE.match(line) for line in lines), result.stderr
    assert lines[0].startswith("[1/3] done 1 failed 0") and lines[-1].startswith("[3/3] done 3 failed 0")
    quiet = run("-q", *args, "--overwrite")
    assert quiet.exit_code == 0 and progress_lines(quiet.stderr) == [], quiet.stderr


def test_generate_prompts_prints_progress_lines_with_skipped_items(place):
    (place / "prompts.txt").write_text("a fox\na cat\n")
    args = generate_args(extra=["--prompts", "prompts.txt", "--out", "gen"])
    assert run(*args).exit_code == 0
    (place / "prompts.txt").write_text("a fox\na cat\na dog\n")
    again = run(*args, "--json")  # the JSON on stdout, the lines on stderr
    one_json_object(again, {"done", "skipped"})
    assert progress_lines(again.stderr)[-1].startswith("[3/3] done 1 failed 0 skipped 2 "), again.stderr


# -- Ctrl-C -----------------------------------------------------------------------------------------
def interrupt_on(monkeypatch, call: int) -> None:
    """Ctrl-C while the `call`-th generated image is being written."""
    from icdedit.generation import GenerationWork

    finish, calls = GenerationWork.finish, []

    def finishing(self, *args):
        calls.append(1)
        if len(calls) == call:
            raise KeyboardInterrupt
        return finish(self, *args)

    monkeypatch.setattr(GenerationWork, "finish", finishing)


def test_an_interrupted_run_says_how_many_remain_and_how_to_resume(place, monkeypatch):
    (place / "prompts.txt").write_text("".join(f"prompt {i}\n" for i in range(6)))
    args = generate_args(extra=["--prompts", "prompts.txt", "--out", "gen"])
    interrupt_on(monkeypatch, 3)
    result = run(*args)
    assert result.exit_code == 130, result.output
    assert "interrupted: 4 remaining; run the same command to resume" in result.stderr
    monkeypatch.undo()
    monkeypatch.chdir(place)
    interrupt_on(monkeypatch, 2)
    as_json = run(*args, "--json")
    assert as_json.exit_code == 130
    report = json.loads(as_json.stdout)
    assert report["interrupted"] is True and report["remaining"] == 3 and len(report["skipped"]) == 2
    monkeypatch.undo()
    monkeypatch.chdir(place)
    resumed = run(*args, "--json")
    report = one_json_object(resumed, {"interrupted", "remaining"})
    assert report["interrupted"] is False and report["remaining"] == 0 and len(report["done"]) == 3
    assert "interrupted" not in resumed.stderr


# -- eval's messages --------------------------------------------------------------------------------
def test_eval_of_a_generate_folder_says_what_it_is_and_what_eval_needs(place):
    (place / "prompts.txt").write_text("a fox\na cat\n")
    assert run(*generate_args(extra=["--prompts", "prompts.txt", "--out", "gen"])).exit_code == 0
    result = run("eval", "gen", "--metrics", "psnr")
    assert_clean_error(result, "is a `generate --prompts` folder (2 generated image(s)", "edit batch folder", code=2)
    assert "no done" not in result.stderr


def test_eval_of_a_batch_folder_with_nothing_done_says_so(place):
    (place / "out").mkdir()
    (place / "out" / "results.jsonl").write_text(json.dumps({"item": 1, "status": "failed", "image": "a"}) + "\n")
    assert_clean_error(run("eval", "out", "--metrics", "psnr"), "no done edits in results.jsonl", code=2, hint=True)


@pytest.fixture
def pairs(place, monkeypatch):
    """A pairs file of one photo and its 'edit', and no evaluation model on disk."""
    monkeypatch.setenv("ICDEDIT_HOME", str(place / "home"))
    make_photo(32, 32).save("a.png")
    make_photo(32, 32, seed=3).save("b.png")
    (place / "pairs.csv").write_text("source,edit,tgt\na.png,b.png,a photo\n")
    return place / "pairs.csv"


def test_eval_lists_each_skipped_metric_and_its_download(pairs):
    result = run("eval", pairs, "--json")
    report = one_json_object(result, {"skipped_metrics"})
    assert report["metrics"] == ["psnr_whole", "mse_whole", "ssim_whole"]
    skipped = {entry["metric"]: entry["download"] for entry in report["skipped_metrics"]}
    assert skipped == {
        "structure": "icdedit download dino-vitb8",
        "lpips": "icdedit download lpips-squeeze",
        "clip_whole": "icdedit download clip-vit-large-patch14",
        "clip_edited": "icdedit download clip-vit-large-patch14",
        "dinov2": "icdedit download dinov2-base",
        "clip_image": "icdedit download clip-vit-large-patch14",
    }
    note = [line for line in result.stderr.splitlines() if line.startswith("note: skipped")]
    assert len(note) == 1 and "dinov2 (`icdedit download dinov2-base`)" in note[0], result.stderr
    assert "clip_whole, clip_edited, clip_image (`icdedit download clip-vit-large-patch14`)" in note[0]
    # metrics asked for by name: nothing is skipped silently (a missing model is an error instead)
    asked = one_json_object(run("eval", pairs, "--metrics", "psnr", "--overwrite", "--json"))
    assert asked["skipped_metrics"] == []


def test_eval_replaces_its_own_table_but_keeps_a_foreign_file(pairs):
    table = pairs.with_name("pairs-metrics.csv")
    assert run("eval", pairs, "--metrics", "psnr").exit_code == 0
    first = table.read_text()
    again = run("eval", pairs, "--metrics", "psnr,mse", "--json")  # its own report: replaced, no --overwrite
    assert one_json_object(again)["csv"] == str(table)
    assert table.read_text() != first and table.read_text().startswith("item,source,edit,target,psnr_whole,mse_whole")
    table.write_text("name,score\nmine,1\n")  # a file eval did not write
    assert_clean_error(run("eval", pairs, "--metrics", "psnr"), "already exists", "--overwrite")
    assert table.read_text() == "name,score\nmine,1\n"


# -- edit --out DIR ---------------------------------------------------------------------------------
@pytest.fixture
def photo(place):
    make_photo(64, 64).save(place / "photo.png")
    return place / "photo.png"


def test_edit_out_dir_holds_every_output(place, photo):
    result = run(*edit_args(photo, "a photo of a cat", "a photo of a dog", extra=["--out", "edits", "--json"]))
    report = one_json_object(result, {"outputs"})
    assert report["outputs"] == ["edits/photo-a-photo-of-a-dog.png"]
    assert Image.open(place / "edits" / "photo-a-photo-of-a-dog.png").size == (64, 64)
    # a bare -o name goes in the folder; an -o naming the folder itself is the same place
    extra = ["--out", "edits", "--save-latent", "e.safetensors", "--json"]
    named = one_json_object(run(*edit_args(photo, "a photo of a cat", "a dog", "e.png", extra=extra)))
    assert named["outputs"] == ["edits/e.png"] and named["latent"] == "edits/e.safetensors"
    same = run(*edit_args(photo, "a photo of a cat", "a dog", "edits/f.png", extra=["--out", "edits/", "--json"]))
    assert one_json_object(same)["outputs"] == ["edits/f.png"]
    grid = run(*edit_args(photo, "a photo of a cat", "a dog", extra=["--out", "edits", "--grid", "tau=0.5,0.8"]))
    assert grid.exit_code == 0, grid.output
    assert (place / "edits" / "photo-a-dog-grid-tau.png").is_file() and (
        place / "edits" / "photo-a-dog-tau0.5.png"
    ).is_file()
    assert sorted(p.name for p in place.iterdir()) == ["edits", "photo.png"]  # nothing outside the folder


def test_edit_out_dir_refuses_an_o_in_another_folder_and_a_file_as_folder(place, photo):
    before = sorted(p.name for p in place.iterdir())
    other = run(*edit_args(photo, "a photo of a cat", "a dog", "elsewhere/e.png", extra=["--out", "edits"]))
    assert_clean_error(other, "-o elsewhere/e.png is in another folder than --out edits", code=2, hint=True)
    file = run(*edit_args(photo, "a photo of a cat", "a dog", extra=["--out", "photo.png"]))
    assert_clean_error(file, "--out photo.png is a file", code=2, folder=place, before=before)


# -- side-by-side and the contact sheet -------------------------------------------------------------
def test_side_by_side_of_several_targets_has_captioned_panels_and_its_own_name(place, photo):
    targets = ["a photo of a dog", "a photo of a very fluffy white dog sitting on a red sofa in the sun"]
    result = run(*edit_args(photo, "a photo of a cat", targets, extra=["--side-by-side", "--json"]))
    report = one_json_object(result, {"side_by_side"})
    assert report["side_by_side"] == "photo-side-by-side.png"  # the photo's, not the first target's
    image = np.asarray(Image.open(report["side_by_side"]).convert("RGB")).astype(int)
    strip = 14 + 2 * 6
    assert image.shape == (64 + strip, 3 * 64 + 2 * 8, 3)
    panels = [np.asarray(Image.open(p).convert("RGB")).astype(int) for p in [photo, *report["outputs"]]]
    for n, panel in enumerate(panels):
        left = n * (64 + 8)
        assert np.array_equal(image[:64, left : left + 64], panel)
        caption = image[64:, left : left + 64]
        assert (caption < 128).any(), n  # a label is written under each panel
        assert (caption[:, -2:] == 255).all(), n  # and shortened to fit it (the long prompt too)
    one = run(*edit_args(photo, "a photo of a cat", "a dog", "e.png", extra=["--side-by-side", "--json"]))
    single = Image.open(one_json_object(one)["side_by_side"])
    assert single.size == (2 * 64 + 8, 64)  # one target: original | edit, as before


def test_shorten_cuts_long_captions_with_an_ellipsis():
    from icdedit.images import shorten

    assert shorten("a dog", 200) == "a dog"
    short = shorten("a photo of a very fluffy white dog sitting on a red sofa", 80)
    assert short.endswith("...") and "a photo of a very fluffy".startswith(short[:-3])


def test_the_grid_sheet_shows_the_prompts_and_the_original(place, photo):
    result = run(*edit_args(photo, "a photo of a cat", "a photo of a dog", "g.png", extra=["--grid", "tau=0.5,0.8"]))
    assert result.exit_code == 0, result.output
    sheet = np.asarray(Image.open("g-grid-tau.png").convert("RGB")).astype(int)
    strip = 14 + 2 * 6
    assert sheet.shape[0] == 2 * strip + (64 + 6) + strip + (64 + 6)  # prompts, original, labels, one row
    assert (sheet[:strip] < 128).any() and (sheet[strip : 2 * strip] < 128).any()  # source: ..., target: ...
    original = np.asarray(Image.open(photo).convert("RGB")).astype(int)
    top = 2 * strip
    assert any(np.array_equal(sheet[top : top + 64, x : x + 64], original) for x in range(sheet.shape[1] - 63))
