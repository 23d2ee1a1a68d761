import io

import numpy as np
import pytest
from PIL import Image

from icdedit.errors import InputError, OutputError
from icdedit.images import (
    from_model_output,
    load_image,
    plan_size,
    prepare_image,
    processing_size,
    save_image,
    to_model_input,
)
from icdedit.metrics import psnr, ssim


def _save(tmp_path, image, name, **kw):
    path = tmp_path / name
    image.save(path, **kw)
    return path


def test_rgba_is_composited_over_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    img.putpixel((0, 0), (255, 0, 0, 255))
    out = load_image(_save(tmp_path, img, "a.png"))
    assert out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0) and out.getpixel((1, 1)) == (255, 255, 255)


@pytest.mark.parametrize(
    "mode, color, expected",
    [("L", 128, (128, 128, 128)), ("LA", (50, 255), (50, 50, 50)), ("CMYK", (0, 0, 0, 0), (255, 255, 255))],
)
def test_other_modes_become_rgb(tmp_path, mode, color, expected):
    name = "a.tif" if mode == "CMYK" else "a.png"
    out = load_image(_save(tmp_path, Image.new(mode, (3, 3), color), name))
    assert out.mode == "RGB" and out.getpixel((1, 1)) == expected


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (2, 2), 0)
    img.putpalette([0, 0, 255] + [0, 255, 0] * 255)
    img.info["transparency"] = 0
    out = load_image(_save(tmp_path, img, "p.png", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path):
    array = np.full((4, 4), 65535 // 2, dtype=np.uint16)
    path = _save(tmp_path, Image.fromarray(array), "deep.png")
    out = load_image(path)
    assert out.getpixel((0, 0)) == (127, 127, 127) or out.getpixel((0, 0)) == (128, 128, 128)


def test_exif_orientation_is_honoured(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif)
    assert load_image(path).size == (20, 40)


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(InputError, match="not an image"):
        load_image(tmp_path / "text.png")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 200, 30)).save(buf, "JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(InputError, match="damaged"):
        load_image(tmp_path / "cut.jpg")


@pytest.mark.parametrize(
    "size, long_side, expected",
    [
        ((512, 512), 512, (512, 512)),
        ((1024, 768), 512, (512, 384)),
        ((768, 1024), 512, (384, 512)),
        ((100, 1000), 512, (64, 512)),
        ((640, 480), 256, (256, 192)),
        ((300, 200), 512, (512, 320)),
    ],
)
def test_processing_size_keeps_aspect_in_multiples_of_64(size, long_side, expected):
    assert plan_size(*size, long_side) == expected


def test_the_size_rule_is_the_model_familys(tiny_spec, xl_spec):
    """One function applies it: the long side for SD1.5, the area for SDXL; by default at the
    model's resolution."""
    assert processing_size(tiny_spec, (4032, 3024), 512) == (512, 384)
    assert processing_size(xl_spec, (4032, 3024), 1024) == (1152, 896)
    assert processing_size(tiny_spec, (4032, 3024)) == plan_size(4032, 3024, tiny_spec.resolution)


def test_a_512_square_is_processed_untouched():
    img = Image.new("RGB", (512, 512), (1, 2, 3))
    assert prepare_image(img, plan_size(512, 512, 512)).processed is img
    with pytest.raises(InputError):
        plan_size(10, 10, 100)


def test_pixels_round_trip_exactly_and_round_to_nearest():
    array = np.random.RandomState(0).randint(0, 256, (8, 8, 3)).astype(np.uint8)
    x = to_model_input(Image.fromarray(array))
    assert x.shape == (1, 3, 8, 8) and x.min() >= -1 and x.max() <= 1
    assert np.array_equal(np.asarray(from_model_output(x)[0]), array)
    import torch

    # 0.999 of a level rounds up (the official code truncates it down)
    almost = torch.full((1, 3, 1, 1), (100.999 / 255 - 0.5) * 2)
    assert np.asarray(from_model_output(almost)[0])[0, 0, 0] == 101


def test_save_is_atomic_and_leaves_no_temp_files(tmp_path):
    save_image(Image.new("RGB", (4, 4)), tmp_path / "out.png")
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]

    bad = Image.new("RGB", (4, 4))
    bad.save = lambda *a, **k: (_ for _ in ()).throw(OSError("disk full"))
    with pytest.raises(OutputError, match="cannot write .*other.png: disk full"):
        save_image(bad, tmp_path / "other.png")
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


def test_psnr_and_ssim():
    a = np.zeros((16, 16, 3), dtype=np.uint8)
    b = a.copy()
    assert psnr(a, b) == float("inf") and ssim(a, b) == pytest.approx(1.0)
    b[:] = 10  # mse 100 -> 10 log10(255^2 / 100)
    assert psnr(a, b) == pytest.approx(10 * np.log10(255**2 / 100))
    noise = np.random.RandomState(0).randint(0, 256, (32, 32, 3)).astype(np.uint8)
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    assert ssim(smooth, noise) < 0.2 < ssim(smooth, np.clip(smooth.astype(int) + 3, 0, 255).astype(np.uint8))
