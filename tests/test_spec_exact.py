"""End to end against the independent reference (tests/reference.py): the CLI's inverted
latent and reconstruction are what docs/numerics.md defines, to float32 precision on CPU."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from typer.testing import CliRunner

from icdedit.cli import app

from . import reference
from .helpers import make_photo
from .reference import embed, ref_invert
from .tolerance import Float32Error, assert_near_exact, assert_same_mathematics

runner = CliRunner()


def test_invert_gives_the_spec_latent(tmp_path, tiny_model, ref, ref64, editor64):
    image = make_photo(64, 64, seed=3)
    image.save(tmp_path / "in.png")
    out = tmp_path / "z.safetensors"
    result = runner.invoke(
        app,
        [
            "invert",
            str(tmp_path / "in.png"),
            "--prompt",
            "a photo of a cat",
            "--model",
            str(tiny_model),
            "--seed",
            "7",
            "--device",
            "cpu",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    with safe_open(str(out), "pt") as f:
        latent, meta = f.get_tensor("latent"), f.metadata()
    assert latent.dtype == torch.float32 and latent.shape == (1, 4, 8, 8)
    exact = ref_invert(ref64, image, "a photo of a cat", 7)
    error = Float32Error.measure(ref_invert(ref, image, "a photo of a cat", 7), exact)
    assert_near_exact(latent, exact, error, "inverted latent")
    assert_same_mathematics(editor64.invert(image, "a photo of a cat", 7).latent, exact, error, "float64 inversion")
    assert meta["prompt"] == "a photo of a cat" and meta["seed"] == "7" and meta["model"] == "tiny"
    assert meta["forward_timesteps"] == "19,259,519,779" and meta["processed_size"] == "64x64"


@pytest.mark.parametrize("guidance, tau", [(0.0, 0.8), (7.0, 0.8), (3.0, 1.0)])
def test_reconstruct_gives_the_spec_image(tmp_path, tiny_model, ref, guidance, tau):
    image = make_photo(64, 64, seed=4)
    image.save(tmp_path / "in.png")
    out = tmp_path / "rec.png"
    result = runner.invoke(
        app,
        [
            "reconstruct",
            str(tmp_path / "in.png"),
            "--prompt",
            "a dog on the grass",
            "--model",
            str(tiny_model),
            "--guidance",
            str(guidance),
            "--tau",
            str(tau),
            "--device",
            "cpu",
            "-o",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    z_T = ref_invert(ref, image, "a dog on the grass", 0)
    z = reference.decode(
        ref["rev"],
        z_T,
        embed(ref, ["a dog on the grass"]),
        lambda t: [reference.w_of_t(t, guidance, tau)],
        [259, 519, 779, 999],
    )
    with torch.no_grad():
        x = ref["vae"].decode(z / 0.18215).sample
    expected = ((x / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)[0].permute(1, 2, 0).numpy()
    got = np.asarray(Image.open(out))
    # 8-bit pixels: float32 errors (about 1e-5 here) are far below a level (1/127.5 in [-1, 1]),
    # but a value next to a rounding boundary still moves to the neighbouring level.
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    report = json.loads(result.stdout)
    assert report["psnr"] > 0 and -1 <= report["ssim"] <= 1
