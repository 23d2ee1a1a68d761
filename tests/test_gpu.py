"""GPU smoke tests (`make test-gpu`): what only a CUDA device shows, offline, on random weights.

Every test here is marked `gpu`. Without a CUDA device they are skipped, with the reason, so
`make test` stays CPU-only and green; with ICDEDIT_REQUIRE_GPU=1 (a GPU CI runner, `.ci/run-gpu`)
a missing device fails them instead, so that a runner which lost its GPU cannot pass by skipping.
ICDEDIT_GPU_TESTS_DEVICE=cpu runs them on the CPU to check the tests themselves (the checks only
CUDA can make, graph capture and device memory, still skip there); it proves nothing about GPUs.

- The CLI (`invert`, `edit`, `batch` with CUDA graphs, `generate`) in fp16, tiny SD1.5 and SDXL.
- CUDA graph replays equal eager execution bit for bit: a replay runs the kernels captured from
  the same eager code on the same inputs.
- fp16 (and `--compile` with CUDA graphs, once) within the bound that float32's measured error
  implies, scaled by the ratio of the unit roundoffs (tests/tolerance.py), the decoded image's
  PSNR against float32 included.
- The full-size random SD1.5 architecture: one 512 px invert + edit within a memory bound.
"""

from __future__ import annotations

import csv
import json
import math
import os
from contextlib import contextmanager

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from icdedit.cli import app
from icdedit.editor import Editor
from icdedit.latents import load_latent
from icdedit.loader import load_model
from icdedit.specs import load_spec
from icdedit.tiny import build_tiny_model

from .full_size import random_bundle, random_components
from .helpers import make_photo
from .tolerance import SAFETY, UNIT_ROUNDOFF, Float32Error, assert_close

pytestmark = pytest.mark.gpu
runner = CliRunner()
SOURCE, TARGET, OTHER = "a photo of a cat", "a photo of a dog", "a photo of a lion"


@pytest.fixture(scope="module")
def device() -> torch.device:
    forced = os.environ.get("ICDEDIT_GPU_TESTS_DEVICE")
    if forced:
        return torch.device(forced)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if os.environ.get("ICDEDIT_REQUIRE_GPU") == "1":
        pytest.fail(
            f"ICDEDIT_REQUIRE_GPU=1, but torch {torch.__version__} sees no CUDA device (CUDA build: "
            f"{torch.version.cuda})"
        )
    pytest.skip("needs a CUDA GPU: `make test-gpu` on a GPU machine runs these")


def needs_cuda(device: torch.device) -> None:
    if device.type != "cuda":
        pytest.skip(f"a check only CUDA can make (this run is on {device})")


@pytest.fixture(scope="module", params=["sd15", "sdxl"])
def model_yaml(request, tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp(f"gpu-tiny-{request.param}"), family=request.param)


@contextmanager
def full_float32():
    """Float32 as float32: on Ampere and later, cuDNN's convolutions default to TF32 (10-bit
    mantissas), which would make the float32 run as coarse as the runs it is the yardstick of.
    torch >= 2.9 sets this through `fp32_precision` (reading the old flags after it was used can
    raise); older ones through `allow_tf32`."""
    if hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cudnn.conv, "fp32_precision"):
        settings = [torch.backends.cuda.matmul, torch.backends.cudnn.conv]
        saved = [s.fp32_precision for s in settings]
        for setting in settings:
            setting.fp32_precision = "ieee"
        try:
            yield
        finally:
            for setting, value in zip(settings, saved):
                setting.fp32_precision = value
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# fp16 rounds 2^13 times coarser than float32 (unit roundoffs 2^-11 and 2^-24)
FP16_OVER_FP32 = (torch.finfo(torch.float16).eps / 2) / (torch.finfo(torch.float32).eps / 2)


def fp16_tolerance(error32: Float32Error, exact: torch.Tensor) -> float:
    """How far an fp16 run may lie from the float64 one: float32's measured error scaled by the
    ratio of the unit roundoffs, times the usual safety factor. (The tiny models measured about
    0.05 of it on the CPU.)"""
    return error32.tolerance(exact) * FP16_OVER_FP32


def pixel_psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of decoded pixels in [-1, 1] (peak-to-peak 2), before rounding to 8 bits."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(4 / mse)


def fp16_psnr_bound(float32: torch.Tensor, exact: torch.Tensor) -> float:
    """The least PSNR of fp16 pixels against float32's: the same rule as `fp16_tolerance` in
    root-mean-square terms. fp16's error is at most SAFETY * 2^13 times float32's (measured
    against float64, never below one rounding), float32's own at most SAFETY times, so their
    difference is at most SAFETY * (2^13 + 1) float32 errors: 20 log10 of that (96 dB) below
    float32's PSNR against float64."""
    floor = UNIT_ROUNDOFF * float(exact.double().pow(2).mean().sqrt())
    rms32 = max(float((float32.double() - exact).pow(2).mean().sqrt()), floor)
    return 10 * math.log10(4 / rms32**2) - 20 * math.log10(SAFETY * (FP16_OVER_FP32 + 1))


# -- the CLI in fp16 -----------------------------------------------------------------------------------
def cli(*args):
    result = runner.invoke(app, [*map(str, args)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def assert_picture(path, size):
    pixels = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
    assert pixels.shape == (size[1], size[0], 3) and pixels.std() > 0, f"{path}: a blank or mis-sized image"


def test_cli_invert_edit_batch_generate_in_fp16(device, model_yaml, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_photo(96, 64).save("photo.png")
    on = ["-m", model_yaml, "--device", device.type, "--dtype", "fp16", "--json"]
    graphs = ["--cuda-graphs"] if device.type == "cuda" else []

    inverted = cli("invert", "photo.png", "-p", SOURCE, "-o", "cat.safetensors", *on)
    latent = load_latent("cat.safetensors").latent
    assert inverted["output"] == "cat.safetensors" and torch.isfinite(latent).all() and latent.std() > 0

    edited = cli("edit", "cat.safetensors", "--tgt", TARGET, "-o", "dog.png", *on)
    assert edited["outputs"] == ["dog.png"]
    assert_picture("dog.png", (96, 64))

    for name in ("a.png", "b.png", "c.png"):
        make_photo(96, 64, seed=len(name) + ord(name[0])).save(name)
    with open("edits.csv", "w", newline="") as handle:
        rows = csv.writer(handle)
        rows.writerows([["image", "src", "tgt"], ["a.png", SOURCE, TARGET], ["b.png", SOURCE, OTHER]])
        rows.writerow(["c.png", SOURCE, TARGET])
    batch = cli("batch", "edits.csv", "--out", "out", "--batch-size", "2", *graphs, *on)
    assert batch["done"] == [1, 2, 3] and batch["failed"] == {}
    for picture in (tmp_path / "out").glob("*.png"):
        assert_picture(picture, (96, 64))

    generated = cli("generate", SOURCE, "--num", "2", "--seed", "3", "-o", "gen.png", *graphs, *on)
    assert [image["seed"] for image in generated["images"]] == [3, 4]
    for image in generated["images"]:
        assert_picture(image["output"], (64, 64))


# -- CUDA graphs, fp16, --compile ------------------------------------------------------------------------
def invert_and_edit(editor: Editor, photo: Image.Image) -> list[torch.Tensor]:
    """Latents that depend on every network: the inversion, a replace edit (P2P's control) and
    the decoded target's pixels (the VAE)."""
    inversion = editor.invert(photo, SOURCE, seed=1)
    z = editor.edit(inversion, [TARGET]).latents.to(editor.device)
    vae = editor.bundle.vae
    with torch.no_grad():
        pixels = vae.decode((z[-1:] / editor.bundle.vae_scaling_factor).to(vae.dtype)).sample
    return [inversion.latent.double().cpu(), z.double().cpu(), pixels.double().cpu()]


def test_cuda_graph_replays_equal_eager_execution(device, model_yaml):
    needs_cuda(device)
    bundle = load_model(load_spec(model_yaml), device=str(device), dtype="fp16")
    eager, graphed = Editor(bundle), Editor(bundle, cuda_graphs=True)
    photo = make_photo(96, 64)
    inversion = eager.invert(photo, SOURCE, seed=1)
    assert torch.equal(graphed.invert(photo, SOURCE, seed=1).latent, inversion.latent)
    # captured on the first edit; replayed with other prompts of the same structure (the
    # controller's buffers reloaded), then a structure of its own (refine), then the first again
    for target in (TARGET, OTHER, "a red photo of a cat", TARGET):
        expected = eager.edit(inversion, [target]).latents
        assert torch.equal(graphed.edit(inversion, [target]).latents, expected), target
    seeds = [5, 6]
    made = [g.latent for g in graphed.generate([SOURCE, TARGET], seeds)]
    assert all(torch.equal(a, g.latent) for a, g in zip(made, eager.generate([SOURCE, TARGET], seeds)))
    assert graphed._graphs._graphs, "nothing was captured"


def test_fp16_within_the_bound_from_float32s_measured_error(device, model_yaml):
    photo = make_photo(96, 64)
    spec = load_spec(model_yaml)
    with full_float32():
        exact = invert_and_edit(Editor(load_model(spec, device=str(device), dtype="fp64")), photo)
        float32 = invert_and_edit(Editor(load_model(spec, device=str(device), dtype="fp32")), photo)
    half = invert_and_edit(Editor(load_model(spec, device=str(device), dtype="fp16")), photo)
    for name, x64, x32, x16 in zip(("inversion", "edit", "pixels"), exact, float32, half):
        assert torch.isfinite(x16).all(), f"{name}: fp16 overflowed"
        assert_close(x16, x64, fp16_tolerance(Float32Error.measure(x32.float(), x64), x64), f"fp16 {name}")
    # the same rule in the terms people read: the decoded pixels' PSNR against float32's
    bound, measured = fp16_psnr_bound(float32[2], exact[2]), pixel_psnr(half[2], float32[2])
    print(f"fp16 pixels against float32's on {device}: PSNR {measured:.1f} dB (bound {bound:.1f} dB)")
    assert measured >= bound


def test_compiled_and_graphed_fp16_within_the_fp16_bound(device, tiny_model):
    """`--compile --cuda-graphs`: Inductor's fused kernels reorder float arithmetic, so the
    result is held to the fp16 bound, not to eager fp16's bits."""
    photo = make_photo(64, 64)
    spec = load_spec(tiny_model)
    with full_float32():
        exact = invert_and_edit(Editor(load_model(spec, device=str(device), dtype="fp64")), photo)
        float32 = invert_and_edit(Editor(load_model(spec, device=str(device), dtype="fp32")), photo)
    compiled = Editor(
        load_model(spec, device=str(device), dtype="fp16"), cuda_graphs=device.type == "cuda", compile=True
    )
    for run in range(2):  # the first compiles (and captures), the second replays
        for name, x64, x32, got in zip(
            ("inversion", "edit", "pixels"), exact, float32, invert_and_edit(compiled, photo)
        ):
            tolerance = fp16_tolerance(Float32Error.measure(x32.float(), x64), x64)
            assert_close(got, x64, tolerance, f"compiled fp16 {name}, run {run + 1}")


# -- the full-size architecture ------------------------------------------------------------------------
WORKING_MEMORY_BOUND = 2 * 2**30


def test_full_size_sd15_edit_at_512_px_within_its_memory_bound(device):
    """Resident: the weights once, plus the forward model's copy of the layers its LoRA changes
    (the weight-swap switch, docs/benchmarks.md): counted from the model, nothing else may stay.
    Working memory (peak minus resident) under 2 GiB at 512 px: the H100 benchmark's peak less
    the weights' bytes leaves about 1 GiB, mostly the VAE at full resolution; a second UNet
    (1.6 GiB in fp16) or attention maps kept for every layer would not fit."""
    needs_cuda(device)
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated(device)
    bundle = random_bundle(random_components("sd15", device, 0, 64), 512, device, torch.float16)
    tensors = [t for m in (bundle.unet, bundle.vae, bundle.text_encoder) for t in [*m.parameters(), *m.buffers()]]
    tensors += list(getattr(bundle.adapters, "_other", {}).values())
    expected = sum(t.numel() * t.element_size() for t in tensors)
    resident = torch.cuda.memory_allocated(device) - before
    assert resident <= 1.01 * expected + 64 * 2**20, (resident / 2**20, expected / 2**20)

    editor = Editor(bundle)
    photo = make_photo(512, 512)
    torch.cuda.reset_peak_memory_stats(device)
    result = editor.edit(editor.invert(photo, SOURCE, seed=0), [TARGET])
    torch.cuda.synchronize(device)
    working = torch.cuda.max_memory_allocated(device) - before - resident
    print(f"full-size SD1.5 at 512 px: resident {resident / 2**20:.0f} MiB, working {working / 2**20:.0f} MiB")
    assert torch.isfinite(result.latents).all() and result.targets[0].size == (512, 512)
    assert working <= WORKING_MEMORY_BOUND, f"{working / 2**20:.0f} MiB"
