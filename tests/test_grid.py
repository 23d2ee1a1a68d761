"""`edit --grid`: every combination of settings decoded from one inversion, each cell equal to
the single edit with its settings."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from icdedit.editor import EditJob
from icdedit.errors import SettingsError, UsageError
from icdedit.grid import Grid, check_grid_method, parse_grid
from icdedit.preparation import prepare_edit, resolve_settings

from .conftest import in_float64, make_photo
from .test_cli import assert_clean_error, run
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
    sheet = Image.open(report["sheet"])
    assert sheet.width > 2 * 96 and sheet.height > 3 * 64  # two columns, three rows of 96 x 64 cells
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
    assert_clean_error(refused, "--grid amplify", "--method p2p", folder=tmp_path, before=before)


def test_grid_settings_start_from_the_preset_and_flags(tiny_spec):
    """A cell is the resolved settings (flag > preset > model default) with the cell's values on top."""
    settings = resolve_settings(tiny_spec, "strong", {"tau": 0.7}, {"guidance": 9.0})
    preset = resolve_settings(tiny_spec, "strong")
    assert settings == replace(preset, tau=0.7, guidance=9.0)
