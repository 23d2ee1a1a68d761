"""User masks: outside the mask every target row is the source row exactly, in latent space at
every reverse step and in the decoded image; with and without local blend, SD1.5 and SDXL."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from safetensors import safe_open

from icdedit import denoisers
from icdedit.errors import InputError
from icdedit.masks import aspect_note, blend_rows, composite, fit_mask, latent_mask, read_mask

from .helpers import assert_clean_error, make_photo, run

SRC, TGT = "a photo of a cat", "a photo of a tiger"


def _ellipse(size=(64, 64), box=(12, 8, 44, 40)) -> Image.Image:
    mask = Image.new("L", size)
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    return mask


# -- the pieces -------------------------------------------------------------------------------------
def test_fit_mask_stretches_and_feathers():
    mask = fit_mask(_ellipse((32, 32), (4, 4, 20, 20)), (64, 48))
    assert mask.shape == (48, 64) and mask.dtype == torch.float32
    assert set(fit_mask(_ellipse(), (64, 64)).unique().tolist()) == {0.0, 1.0}  # no feather: as drawn
    soft = fit_mask(_ellipse(), (64, 64), feather=3)
    assert ((soft > 0) & (soft < 1)).sum() > 50  # a soft edge
    assert soft[0, 0] == 0 and soft[24, 28] == 1  # far outside and deep inside unchanged
    assert torch.equal(fit_mask(np.ones((4, 4)), (8, 8)), torch.ones(8, 8))  # arrays of 0..1 too


def test_a_latent_cell_is_kept_only_where_its_whole_block_is_unedited():
    pixels = torch.zeros(64, 64)
    pixels[9, 17] = 0.25  # one pixel of block (1, 2)
    cells = latent_mask(pixels, (8, 8))[0, 0]
    assert cells[1, 2] == 0.25 and cells.sum() == 0.25


def test_blend_rows_and_composite_keep_the_source_exactly_where_the_mask_is_zero():
    z = torch.randn(4, 4, 8, 8)
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., 2:5, 3:6] = 0.5
    out = blend_rows(z, 1, 3, mask)  # rows 1 (source), 2, 3 (targets); row 0 belongs to another job
    assert torch.equal(out[0], z[0])
    outside = (mask[0, 0] == 0).expand(4, 8, 8)
    for row in (2, 3):
        assert torch.equal(out[row][outside], z[1][outside])
        assert torch.allclose(out[row][~outside], (z[1] + 0.5 * (z[row] - z[1]))[~outside])
    source, edit = make_photo(16, 16), make_photo(16, 16, seed=1)
    pixel_mask = torch.zeros(16, 16)
    pixel_mask[4:8, 4:8] = 1
    mixed = np.asarray(composite(source, edit, pixel_mask))
    assert np.array_equal(mixed[pixel_mask.numpy() == 0], np.asarray(source)[pixel_mask.numpy() == 0])
    assert np.array_equal(mixed[4:8, 4:8], np.asarray(edit)[4:8, 4:8])


def test_bad_masks_are_named(tmp_path):
    with pytest.raises(InputError, match="mask not found"):
        read_mask(tmp_path / "none.png")
    Image.new("L", (8, 8)).save(tmp_path / "black.png")
    with pytest.raises(InputError, match="all black"):
        read_mask(tmp_path / "black.png")
    (tmp_path / "text.png").write_text("not an image")
    with pytest.raises(InputError, match="not an image"):
        read_mask(tmp_path / "text.png")
    assert aspect_note(Image.new("L", (200, 100)), (96, 64)) is not None
    assert aspect_note(Image.new("L", (192, 128)), (96, 64)) is None


# -- exactness --------------------------------------------------------------------------------------
def _spy_steps(monkeypatch):
    """Every latent batch right after the mask was applied, one per reverse step."""
    seen = []
    original = denoisers.blend_rows

    def spy(z, start, count, mask):
        out = original(z, start, count, mask)
        seen.append((out.clone(), start, count, mask.clone()))
        return out

    monkeypatch.setattr(denoisers, "blend_rows", spy)
    return seen


def _assert_kept(seen, steps):
    assert len(seen) == steps
    for z, start, count, mask in seen:
        outside = (mask[0, 0] == 0).expand(z.shape[1], -1, -1).to(z.device)
        for row in range(start + 1, start + count):
            assert torch.equal(z[row][outside], z[start][outside])


@pytest.mark.parametrize("no_blend", [False, True])
def test_sd15_masked_edits_keep_the_source_outside_exactly(editor, monkeypatch, no_blend):
    photo = make_photo(64, 64, seed=2)
    inversion = editor.invert(photo, SRC, seed=3)
    seen = _spy_steps(monkeypatch)
    result = editor.edit(inversion, [TGT, "a photo of a lion"], mask=_ellipse(), no_blend=no_blend, decode_source=True)
    _assert_kept(seen, editor.spec.plan().num_reverse_steps)
    pixels = fit_mask(_ellipse(), (64, 64)).numpy()
    source = np.asarray(result.source)
    for target in result.targets:
        edited = np.asarray(target)
        assert np.array_equal(edited[pixels == 0], source[pixels == 0])  # the decoded image too
        assert np.abs(edited[pixels > 0].astype(int) - source[pixels > 0]).max() > 0  # and it did edit inside
    cells = latent_mask(torch.from_numpy(pixels), (8, 8))[0, 0] == 0
    assert torch.equal(result.latents[1][:, cells], result.latents[0][:, cells])


def test_sdxl_prompt_switch_edits_take_a_mask_too(xl_editor, monkeypatch):
    """The switch has no attention control: the mask alone brings in the source row."""
    photo = make_photo(64, 64, seed=4)
    inversion = xl_editor.invert(photo, SRC, seed=1)
    plain = xl_editor.edit(inversion, [TGT])
    assert plain.latents.shape[0] == 1  # no source row without a mask
    seen = _spy_steps(monkeypatch)
    masked = xl_editor.edit(inversion, [TGT], mask=np.asarray(_ellipse()) / 255, decode_source=True)
    assert masked.latents.shape[0] == 2
    _assert_kept(seen, xl_editor.spec.plan().num_reverse_steps)
    pixels = fit_mask(_ellipse(), (64, 64)).numpy()
    edited, source = np.asarray(masked.targets[0]), np.asarray(masked.source)
    assert np.array_equal(edited[pixels == 0], source[pixels == 0])


# -- the command line -------------------------------------------------------------------------------
def test_edit_with_a_mask_through_the_cli(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    make_photo(64, 64, seed=5).save("photo.png")
    _ellipse().resize((128, 128)).save("mask.png")
    result = run(
        "edit", "photo.png", "-m", tiny_model, "-s", SRC, "-t", TGT, "--mask", "mask.png", "-o", "e.png",
        "--side-by-side", "--save-latent", "e.safetensors", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mask"] == "mask.png" and "stretched" not in result.stderr
    with safe_open("e.safetensors", framework="pt") as handle:
        assert handle.metadata()["mask"] == "mask.png (feather 0)"
        rows, mask = handle.get_tensor("latent"), handle.get_tensor("mask")
    outside = (mask[0, 0] == 0).expand(4, -1, -1)
    assert torch.equal(rows[1][outside], rows[0][outside])
    # the side-by-side original carries the mask's outline
    sbs = np.asarray(Image.open("e-side-by-side.png"))[:, :64]
    assert (np.abs(sbs.astype(int) - np.asarray(Image.open("photo.png")).astype(int)).sum(-1) > 0).sum() > 20
    _ellipse((128, 64)).save("wide.png")
    stretched = run("edit", "photo.png", "-m", tiny_model, "-s", SRC, "-t", TGT, "--mask", "wide.png", "-o", "w.png")
    assert stretched.exit_code == 0 and "another aspect ratio" in stretched.stderr


@pytest.mark.parametrize(
    ("extra", "fragment", "code"),
    [
        (["--mask", "none.png"], "mask not found: none.png", 1),
        (["--mask", "black.png"], "all black", 1),
        (["--mask", "mask.png", "--mask-feather", "-2"], "--mask-feather -2", 2),
    ],
)
def test_bad_masks_on_the_command_line(tmp_path, monkeypatch, tiny_model, extra, fragment, code):
    monkeypatch.chdir(tmp_path)
    make_photo(64, 64).save("photo.png")
    _ellipse().save("mask.png")
    Image.new("L", (64, 64)).save("black.png")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run("edit", "photo.png", "-m", tiny_model, "-s", SRC, "-t", TGT, "-o", "x.png", *extra)
    assert_clean_error(result, fragment, code=code, folder=tmp_path, before=before)


def test_batch_takes_a_mask_column(tmp_path, monkeypatch, tiny_model):
    monkeypatch.chdir(tmp_path)
    make_photo(64, 64, seed=6).save("a.png")
    _ellipse().save("mask.png")
    Image.new("L", (64, 64)).save("black.png")
    Path("m.csv").write_text(f"image,src,tgt,mask\na.png,{SRC},{TGT},mask.png\na.png,{SRC},{TGT},black.png\n")
    result = run("batch", "m.csv", "-m", tiny_model, "--out", "out", "--json")
    assert result.exit_code == 1
    summary = json.loads(result.stdout)
    assert summary["done"] == [1] and "all black" in summary["failed"]["2"]
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text().splitlines()[0])
    assert record["mask"] == "mask.png"
    single = run("edit", "a.png", "-m", tiny_model, "-s", SRC, "-t", TGT, "--mask", "mask.png", "-o", "s.png")
    assert single.exit_code == 0
    assert np.array_equal(np.asarray(Image.open(record["output"])), np.asarray(Image.open("s.png")))


def test_a_resized_photo_is_exact_outside_the_mask_at_its_own_size(editor):
    """A 96 x 64 photo is processed at 64 x 64: the composite is made after the resize back, so
    the image the user gets is the source row's wherever the mask (at the photo's size) is zero."""
    photo = make_photo(96, 64, seed=7)
    inversion = editor.invert(photo, SRC, seed=2)
    assert inversion.processed_size != inversion.original_size
    drawn = _ellipse((96, 64), (30, 10, 80, 50))
    result = editor.edit(inversion, [TGT], mask=drawn, decode_source=True)
    outside = fit_mask(fit_mask(drawn, inversion.processed_size), (96, 64)).numpy() == 0
    assert outside.sum() > 1000
    edited, source = np.asarray(result.targets[0]), np.asarray(result.source)
    assert edited.shape == (64, 96, 3)
    assert np.array_equal(edited[outside], source[outside])
    assert not np.array_equal(edited[~outside], source[~outside])
