"""`edit --grid`: every combination of settings decoded from one inversion, each cell equal to
the single edit with its settings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from icdedit.editor import EditJob
from icdedit.errors import SettingsError, UsageError
from icdedit.grid import Grid, check_grid_method, parse_grid
from icdedit.preparation import prepare_edit, resolve_settings

from .helpers import assert_clean_error, in_float64, make_photo, run
from .tolerance import Float32Error, assert_near_exact

SRC, TGT = "a photo of a cat", "a photo of a tiger"


def test_parse_grid_keeps_the_order_and_makes_every_combination():
    grid = parse_grid(["cross_replace=0.2,0.4", "self-replace=0.6, 0.8,0.6", "amplify=2"])
    assert grid.keys == ["cross_replace", "self_replace", "amplify"]
    assert grid.cells() == [
        {"cross_replace": 0.2, "self_replace": 0.6, "amplify": 2.0},
        {"cross_replace": 0.2, "self_replace": 0.8, "amplify": 2.0},
        {"cross_replace": 0.4, "self_replace": 0.6, "amplify": 2.0},
        {"cross_replace": 0.4, "self_replace": 0.8, "amplify": 2.0},
    ]
    assert Grid.name_part(grid.cells()[1]) == "cross_replace0.2-self_replace0.8-amplify2"
    assert parse_grid([]) is None


@pytest.mark.parametrize(
    ("items", "flags", "fragment"),
    [
        (["strength=1,2"], (), "is not KEY=V1,V2"),
        (["cross_replace"], (), "is not KEY=V1,V2"),
        (["tau=0.5,high"], (), "'high' is not a number"),
        (["tau=0.5,1.5"], (), "out of range"),
        (["tau=0.5", "tau=0.7"], (), "given twice"),
        (["guidance=7,19"], ("guidance",), "--guidance and --grid guidance"),
        (["guidance=1,2,3,4,5", "tau=0.1,0.2,0.3,0.4", "amplify=1,2,3,4"], (), "more than 64"),
        (["tau=0.1234561,0.1234562"], (), "look the same in file names"),
    ],
)
def test_bad_grids_are_usage_errors(items, flags, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_grid(items, flags)


def test_a_grid_axis_the_method_does_not_read_is_refused():
    check_grid_method(parse_grid(["amplify=2,4"]), "p2p")
    check_grid_method(parse_grid(["guidance=5,9"]), "switch")
    with pytest.raises(SettingsError, match="amplify"):
        check_grid_method(parse_grid(["amplify=2,4"]), "switch")


def test_each_cell_equals_the_single_edit_with_its_settings(tiny_spec, editor, editor64):
    """The cells are rows of one batch: each equals its own edit to float32 precision (measured
    against the float64 run of that edit)."""
    inversion = editor.invert(make_photo(64, 64, seed=3), SRC, seed=1)
    grid = parse_grid(["cross_replace=0.2,0.6", "self_replace=0.4,0.8", "guidance=9,19"])
    edits = [prepare_edit(tiny_spec, SRC, [TGT], resolve_settings(tiny_spec, None, cell)) for cell in grid.cells()]
    cells = editor.edit_many([EditJob.prepared(inversion, edit) for edit in edits])
    exact_rows = []
    for edit, cell, values in zip(edits, cells, grid.cells()):
        exact = editor64.edit(in_float64(inversion), [TGT], edit.settings).latents
        alone = editor.edit(inversion, [TGT], edit.settings).latents
        error = Float32Error.measure(alone, exact)
        assert_near_exact(cell.latents, exact, error, Grid.label(values))
        exact_rows.append((exact, error))
    # and the cells differ: every axis changes the result by far more than rounding
    for i, j in [(0, 1), (0, 2), (0, 4)]:
        (a, error), (b, _) = exact_rows[i], exact_rows[j]
        assert (a[1] - b[1]).abs().max() > 100 * error.tolerance(a)


def _find(sheet: np.ndarray, tile: np.ndarray) -> tuple[int, int]:
    """Where `tile` sits in `sheet`, exactly (top, left)."""
    height, width = tile.shape[:2]
    for top in range(sheet.shape[0] - height + 1):
        for left in np.flatnonzero((sheet[top, : sheet.shape[1] - width + 1] == tile[0, 0]).all(axis=1)):
            if np.array_equal(sheet[top : top + height, left : left + width], tile):
                return top, int(left)
    raise AssertionError("the cell is not in the contact sheet")


def test_grid_through_the_cli_writes_cells_a_sheet_and_json(tmp_path, monkeypatch, tiny_model, photo_path):
    monkeypatch.chdir(tmp_path)
    result = run(
        "edit", photo_path, "-m", tiny_model, "-s", SRC, "-t", TGT, "-o", "g.png",
        "--grid", "cross_replace=0.2,0.6", "--grid", "self_replace=0.4,0.6,0.8", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["sheet"] == "g-grid-cross_replace-self_replace.png" and len(report["grid"]) == 6
    first = report["grid"][1]
    assert first["output"] == "g-cross_replace0.2-self_replace0.6.png"
    assert (first["settings"]["cross_replace"], first["settings"]["self_replace"]) == (0.2, 0.6)
    sheet = np.asarray(Image.open(report["sheet"]).convert("RGB"))
    # the layout: cross_replace across (columns), self_replace down (rows); each tile is its cell
    places = {}
    for cell in report["grid"]:
        at = _find(sheet, np.asarray(Image.open(cell["output"]).convert("RGB")))
        places[(cell["settings"]["cross_replace"], cell["settings"]["self_replace"])] = at
    for self_replace in (0.4, 0.6, 0.8):
        (top_a, left_a), (top_b, left_b) = places[(0.2, self_replace)], places[(0.6, self_replace)]
        assert top_a == top_b and left_a < left_b  # one row, columns by cross_replace
    assert places[(0.2, 0.4)][0] < places[(0.2, 0.6)][0] < places[(0.2, 0.8)][0]  # rows by self_replace
    # a cell is the single edit with its settings (to float32 rounding of the batch: +-1 level)
    single = run(
        "edit", photo_path, "-m", tiny_model, "-s", SRC, "-t", TGT, "-o", "single.png",
        "--cross-replace", "0.2", "--self-replace", "0.6",
    )  # fmt: skip
    assert single.exit_code == 0, single.output
    cell = np.asarray(Image.open(first["output"])).astype(int)
    alone = np.asarray(Image.open("single.png")).astype(int)
    assert np.abs(cell - alone).max() <= 1
    assert not np.array_equal(cell, np.asarray(Image.open(report["grid"][5]["output"])).astype(int))
    again = run("edit", photo_path, "-m", tiny_model, "-s", SRC, "-t", TGT, "-o", "g.png", "--grid", "tau=0.5,0.8")
    assert again.exit_code == 0  # other cells, other names
    clash = run("edit", photo_path, "-m", tiny_model, "-s", SRC, "-t", TGT, "-o", "g.png", "--grid", "tau=0.5,0.8")
    assert_clean_error(clash, "already exists")


@pytest.mark.parametrize(
    ("extra", "fragment", "code"),
    [
        (["--grid", "cross_replace=0.2", "-t", "a photo of a lion"], "one --tgt", 2),
        (["--grid", "tau=0.5", "--save-latent", "x.safetensors"], "--save-latent cannot be used with --grid", 2),
        (["--grid", "tau=0.5", "--tau", "0.7"], "--tau and --grid tau", 2),
        (["--grid", "depth=1"], "is not KEY=V1,V2", 2),
    ],
)
def test_bad_grid_commands_are_one_line(tmp_path, monkeypatch, tiny_model, photo_path, extra, fragment, code):
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run("edit", photo_path, "-m", tiny_model, "-s", SRC, "-t", TGT, *extra)
    assert_clean_error(result, fragment, code=code, folder=tmp_path, before=before)


def test_sdxl_grids_guidance_under_the_switch_and_refuses_attention_axes(tmp_path, monkeypatch, xl_spec, photo_path):
    monkeypatch.chdir(tmp_path)
    ok = run("edit", photo_path, "-m", xl_spec.path, "-s", SRC, "-t", TGT, "--grid", "guidance=5,9", "--json")
    assert ok.exit_code == 0, ok.output
    assert [c["settings"]["guidance"] for c in json.loads(ok.stdout)["grid"]] == [5.0, 9.0]
    before = sorted(p.name for p in tmp_path.iterdir())
    refused = run("edit", photo_path, "-m", xl_spec.path, "-s", SRC, "-t", TGT, "--grid", "amplify=2,4")
    assert_clean_error(refused, "--grid amplify", "--method p2p", folder=tmp_path, before=before, code=2)


def test_grid_settings_start_from_the_preset_and_flags(tiny_spec):
    """A cell is the resolved settings (flag > preset > model default) with the cell's values on top."""
    settings = resolve_settings(tiny_spec, "strong", {"tau": 0.7}, {"guidance": 9.0})
    preset = resolve_settings(tiny_spec, "strong")
    assert settings == replace(preset, tau=0.7, guidance=9.0)


# -- scoring and picking cells ---------------------------------------------------------------------
def test_pick_rules_rank_by_their_metrics_direction_within_bounds():
    from icdedit.grid import parse_pick, rank

    metrics = ["psnr", "structure", "clip_whole"]
    scores = [
        {"psnr_whole": 20.0, "structure": 0.01, "clip_whole": 21.0},
        {"psnr_whole": 25.0, "structure": 0.09, "clip_whole": 24.0},
        {"psnr_whole": 22.0, "structure": 0.04, "clip_whole": 23.0},
        {"psnr_whole": float("nan"), "structure": 0.02, "clip_whole": 30.0},
    ]
    order, picked = rank(scores, parse_pick("clip_whole,structure<0.05", metrics))
    assert order == [3, 1, 2, 0] and picked == 3
    order, picked = rank(scores, parse_pick("clip_whole,structure<0.05,psnr>21", metrics))
    assert picked == 2  # cell 3's psnr is NaN: not within the bound
    order, picked = rank(scores, parse_pick("structure", metrics))
    assert order == [0, 3, 2, 1] and picked == 0  # a distance: lowest first
    assert rank(scores, parse_pick("psnr", metrics))[0][-1] == 3  # NaN sorts last
    assert rank(scores, parse_pick("clip_whole,structure<0.001", metrics))[1] is None
    for bad in ("", "sharpness", "psnr,structure<<1", "psnr,structure=0.1", "psnr,vibes<1"):
        with pytest.raises(UsageError):
            parse_pick(bad, metrics)


def test_score_and_pick_through_the_cli(tmp_path, monkeypatch, tiny_model, photo_path):
    monkeypatch.chdir(tmp_path)
    result = run(
        "edit", photo_path, "-m", tiny_model, "-s", SRC, "-t", TGT, "-o", "t.png",
        "--grid", "cross_replace=0.2,0.6", "--grid", "guidance=9,19",
        "--score", "psnr,ssim", "--pick", "ssim", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    ssim = {cell["output"]: cell["scores"]["ssim_whole"] for cell in report["grid"]}
    assert set(report["grid"][0]["scores"]) == {"psnr_whole", "ssim_whole"}
    assert report["ranking"] == sorted(ssim, key=ssim.get, reverse=True)
    assert report["picked"] == "t.png" and report["picked_cell"] == report["ranking"][0]
    assert np.array_equal(np.asarray(Image.open("t.png")), np.asarray(Image.open(report["picked_cell"])))
    # the scores are eval's: the same numbers for the same pair
    from icdedit.metrics import region_scores

    photo = Image.open(photo_path).convert("RGB")
    expected = region_scores(photo, Image.open(report["picked_cell"]).convert("RGB"), None, ["ssim"])["ssim"]
    assert ssim[report["picked_cell"]] == pytest.approx(expected, rel=1e-6)
    by_psnr = run(
        "edit", photo_path, "-m", tiny_model, "-s", SRC, "-t", TGT, "-o", "v.png",
        "--grid", "cross_replace=0.2,0.6", "--grid", "guidance=9,19", "--score", "psnr,ssim", "--json",
    )  # fmt: skip
    ranked = json.loads(by_psnr.stdout)  # without --pick: by the first metric named, psnr
    psnr = {cell["output"]: cell["scores"]["psnr_whole"] for cell in ranked["grid"]}
    assert ranked["ranked_by"] == "highest psnr" and ranked["ranking"] == sorted(psnr, key=psnr.get, reverse=True)
    table = run(
        "edit", photo_path, "-m", tiny_model, "-s", SRC, "-t", TGT, "-o", "u.png",
        "--grid", "tau=0.5,0.8", "--score", "psnr", "--pick", "psnr,ssim>2",
    )  # fmt: skip
    assert table.exit_code == 0 and "ranked by highest psnr, ssim > 2" in table.stdout
    assert "no cell meets --pick" in table.stderr and not (tmp_path / "u.png").exists()


@pytest.mark.parametrize(
    ("extra", "fragment", "code"),
    [
        (["--score", "psnr"], "--score and --pick are for --grid", 2),
        (["--grid", "tau=0.5,0.8", "--score", "structure"], "icdedit download dino-vitb8", 1),
        (["--grid", "tau=0.5,0.8", "--score", "clip_edited"], "clip_edited needs", 2),
        (["--grid", "tau=0.5,0.8", "--pick", "psnr,ssim~1"], "is not METRIC<NUMBER", 2),
    ],
)
def test_bad_score_and_pick_are_one_line(tmp_path, monkeypatch, tiny_model, photo_path, extra, fragment, code):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ICDEDIT_HOME", str(tmp_path / "home"))
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run("edit", photo_path, "-m", tiny_model, "-s", SRC, "-t", TGT, *extra)
    assert_clean_error(result, fragment, code=code, folder=tmp_path, before=before)


# -- batch --grid -----------------------------------------------------------------------------------
def test_batch_grid_edits_every_item_per_cell_from_one_inversion(tmp_path, monkeypatch, tiny_model):
    from icdedit.editor import Editor

    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos").mkdir()
    for name, seed in (("a", 1), ("b", 2)):
        make_photo(96, 64, seed=seed).save(tmp_path / "photos" / f"{name}.png")
    inverted = []
    original = Editor.invert_many

    def counting(self, images, *args, **kwargs):
        inverted.extend(images)
        return original(self, images, *args, **kwargs)

    monkeypatch.setattr(Editor, "invert_many", counting)
    args = ["batch", "photos", "-m", tiny_model, "--src", SRC, "--tgt", TGT, "--out", "out"]
    result = run(*args, "--grid", "cross_replace=0.2,0.6", "--grid", "self_replace=0.4,0.8", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["done"] == list(range(1, 9))
    assert len(inverted) == 2  # one inversion per photo, shared by its four cells
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert records[1]["output"] == "out/cross_replace0.2-self_replace0.8/0001-a-a-photo-of-a-tiger.png"
    assert (records[1]["settings"]["cross_replace"], records[1]["settings"]["self_replace"]) == (0.2, 0.8)
    assert records[4]["image"].endswith("b.png") and records[4]["settings"]["cross_replace"] == 0.2
    single = run(
        "edit", "photos/a.png", "-m", tiny_model, "-s", SRC, "-t", TGT, "-o", "single.png",
        "--cross-replace", "0.2", "--self-replace", "0.8",
    )  # fmt: skip
    assert single.exit_code == 0
    cell = np.asarray(Image.open(records[1]["output"])).astype(int)
    assert np.abs(cell - np.asarray(Image.open("single.png")).astype(int)).max() <= 1  # float32 rounding of a batch
    again = run(*args, "--grid", "cross_replace=0.2,0.6", "--grid", "self_replace=0.4,0.8", "--json")
    assert json.loads(again.stdout)["skipped"] == list(range(1, 9))
    # eval summarises each cell's settings apart
    scored = run("eval", "out", "--metrics", "psnr,ssim", "--json")
    assert scored.exit_code == 0, scored.output
    by_settings = json.loads(scored.stdout)["by_settings"]
    assert list(by_settings) == [
        "cross_replace=0.2, self_replace=0.4",
        "cross_replace=0.2, self_replace=0.8",
        "cross_replace=0.6, self_replace=0.4",
        "cross_replace=0.6, self_replace=0.8",
    ]
    assert all(group["psnr_whole"]["count"] == 2 for group in by_settings.values())
    # from another folder, with the batch's relative paths; and after a smaller grid, only its cells
    smaller = run(*args, "--grid", "cross_replace=0.2", "--json")
    assert json.loads(smaller.stdout)["done"] == [1, 2]  # renumbered cells: done again
    monkeypatch.chdir(tmp_path / "photos")
    rescored = run("eval", tmp_path / "out", "--metrics", "psnr", "-o", tmp_path / "m2.csv", "--json")
    assert rescored.exit_code == 0, rescored.output
    report = json.loads(rescored.stdout)
    assert [item["item"] for item in report["items"]] == [1, 2] and "by_settings" not in report


def test_batch_grid_fails_rows_whose_method_ignores_an_axis(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    make_photo(64, 64).save("a.png")
    Path("m.csv").write_text(f"image,src,tgt,method\na.png,{SRC},{TGT},p2p\na.png,{SRC},{TGT},switch\n")
    result = run("batch", "m.csv", "-m", tiny_model, "--out", "out", "--grid", "amplify=2,4", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["done"] == [1, 2] and set(summary["failed"]) == {"3", "4"}
    assert "'switch' method uses no attention control" in summary["failed"]["3"]
