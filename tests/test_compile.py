"""`--compile`: attention-free regions compiled, attention control untouched, results unchanged.

Most tests use a counting backend over dynamo's "eager" execution: the regions are traced
exactly as for the real compiler (hooks, guards, swapped weights), the graphs then run as
traced, so results must equal the uncompiled editor bit for bit. One test runs the real
compiler (inductor) and allows its reordered float arithmetic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers.models.attention import FeedForward
from diffusers.models.attention_processor import Attention
from diffusers.models.resnet import ResnetBlock2D

from icdedit.compiling import (
    CACHE_VARIABLE,
    CompileOptions,
    attention_free_regions,
    check_toolchain,
    keep_compiled_code,
)
from icdedit.editor import Editor
from icdedit.errors import SettingsError
from icdedit.loader import load_model

from .tolerance import Float32Error, assert_near_exact

# minutes of compilation in all (the batch test alone about 2.5 min on 2 cores): `make test` runs them,
# the source distribution's run leaves them out (it proves tests/ stands alone)
pytestmark = pytest.mark.slow


class CountingBackend:
    """A torch.compile backend that runs the traced graphs as they are and counts their calls."""

    def __init__(self):
        self.graphs = 0
        self.calls = 0

    def __call__(self, graph_module, example_inputs):
        self.graphs += 1

        def run(*args):
            self.calls += 1
            return graph_module.forward(*args)

        return run


def test_regions_hold_no_attention_and_cover_every_resnet_and_feed_forward(tiny_spec):
    unet = load_model(tiny_spec, device="cpu").unet
    regions = attention_free_regions(unet)
    assert regions and not any(isinstance(m, Attention) for r in regions for m in r.modules())
    covered = {id(m) for r in regions for m in r.modules()}
    for kind in (ResnetBlock2D, FeedForward):
        blocks = [m for m in unet.modules() if isinstance(m, kind)]
        assert blocks and all(id(m) in covered for m in blocks), kind.__name__
    assert not any(id(m) in covered for m in unet.modules() if isinstance(m, Attention))


def latent(width: int, height: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 4, height, width, generator=torch.Generator().manual_seed(seed))


def invert_and_edits(editor: Editor, z0: torch.Tensor) -> list[torch.Tensor]:
    z_T = editor.invert_latent(z0, "a photo of a cat", seed=3)
    one, _ = editor.edit_latents(z_T, "a photo of a cat", ["a photo of a dog"])
    two, _ = editor.edit_latents(z_T, "a photo of a cat", ["a photo of a dog", "a painting of a cat"])
    return [z_T, one, two]


@pytest.mark.parametrize("strategy", ["low-rank", "weight-swap"])
def test_compiled_editor_equals_the_uncompiled_one_on_every_shape(tiny_spec, strategy):
    """Invert (forward model), edits of 2 and 3 rows (reverse model, P2P control) at two latent
    sizes: every UNet evaluation runs the compiled regions, none falls back to plain Python
    (which dynamo does silently past its recompile limit), and the results are unchanged."""
    plain = Editor(load_model(tiny_spec, device="cpu", adapter_strategy=strategy))
    backend = CountingBackend()
    compiled = Editor(load_model(tiny_spec, device="cpu", adapter_strategy=strategy), compile=CompileOptions(backend))
    evals: list[int] = []
    compiled.bundle.unet.register_forward_pre_hook(lambda *_: evals.append(backend.calls))
    for z0 in (latent(8, 8), latent(16, 8, seed=1)):
        for expected, got in zip(invert_and_edits(plain, z0), invert_and_edits(compiled, z0)):
            # exact: this backend runs the traced graph as it is, the same ATen calls on tensors of
            # the same shapes and layouts as eager mode (it held under MKL_CBWR=AVX2 too)
            assert torch.equal(expected, got)
    calls_per_eval = {b - a for a, b in zip(evals, evals[1:])}  # graph calls between UNet starts
    assert len(calls_per_eval) == 1 and calls_per_eval.pop() >= len(attention_free_regions(plain.bundle.unet))
    assert backend.graphs > 8  # more variants than dynamo's default limit: the raised limit is in use


def test_inductor_compiled_editor_matches_eager(tiny_spec, editor64):
    """The real compiler with the weight-swap switch (the CUDA default): the forward model's
    weights, swapped in under compiled code, must be the ones used. Compiled and eager float32
    results both lie within float32 error of the float64 result."""
    plain = Editor(load_model(tiny_spec, device="cpu", adapter_strategy="weight-swap"))
    compiled = Editor(load_model(tiny_spec, device="cpu", adapter_strategy="weight-swap"), compile=True)
    z0 = latent(8, 8)
    z_T = compiled.invert_latent(z0, "a photo of a cat", seed=3)
    exact_T = editor64.invert_latent(z0.double(), "a photo of a cat", seed=3)
    expected_T = plain.invert_latent(z0, "a photo of a cat", seed=3)
    assert_near_exact(z_T, exact_T, Float32Error.measure(expected_T, exact_T), "inversion")
    edited, _ = compiled.edit_latents(expected_T, "a photo of a cat", ["a photo of a dog"])
    exact, _ = editor64.edit_latents(expected_T.double(), "a photo of a cat", ["a photo of a dog"])
    error = Float32Error.measure(plain.edit_latents(expected_T, "a photo of a cat", ["a photo of a dog"])[0], exact)
    assert_near_exact(edited, exact, error, "edit")
    assert (edited[0] - edited[1]).abs().max() > 100 * error.tolerance(exact)  # the edit changed row 1


def test_cuda_graph_modes_are_refused():
    with pytest.raises(ValueError, match="reduce-overhead"):
        CompileOptions(mode="reduce-overhead")


def test_a_broken_toolchain_is_one_clear_error():
    with pytest.raises(SettingsError, match="--compile: torch.compile does not work") as caught:
        check_toolchain(torch.device("cpu"), CompileOptions(backend="no-such-backend"))
    assert "without --compile" in caught.value.hint


def compiled_graphs(cache: Path) -> set[str]:
    """The graphs Inductor has compiled into its cache folder (one entry per graph and shapes)."""
    return {str(p.relative_to(cache)) for p in (cache / "fxgraph").rglob("*") if p.is_file()}


def test_batch_compile_edits_like_the_plain_run_and_the_next_run_reuses_the_compiled_code(tmp_path, tiny_model):
    """`batch --compile` in fresh processes, as people run it: the compiled code is kept under
    $ICDEDIT_HOME, and a second run compiles nothing new (every graph is a cache hit)."""
    from PIL import Image

    from .helpers import make_photo, run

    make_photo(64, 64).save(tmp_path / "cat.png")
    args = ["batch", tmp_path / "cat.png", "--src", "a photo of a cat", "--tgt", "a photo of a dog"]
    args += ["-m", tiny_model, "--device", "cpu", "--json"]
    plain = run(*args, "--out", tmp_path / "plain")
    assert plain.exit_code == 0, plain.stderr
    env = {k: v for k, v in os.environ.items() if k != CACHE_VARIABLE}  # torch sets it once it compiled anything
    env["ICDEDIT_HOME"] = str(tmp_path / "home")
    cache = tmp_path / "home" / "compile-cache"
    graphs = []
    for name in ("compiled", "again"):
        command = [sys.executable, "-m", "icdedit", *map(str, args), "--out", str(tmp_path / name), "--compile"]
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert len(json.loads(done.stdout)["done"]) == 1 and f"kept in {cache}" in done.stderr
        graphs.append(compiled_graphs(cache))
    assert graphs[0] and graphs[1] == graphs[0]

    def pixels(name):
        return torch.tensor(list(Image.open(next((tmp_path / name).glob("*.png"))).getdata())).float()

    # 8-bit pixels: float errors far below a level, but a value at a rounding boundary moves one level
    assert (pixels("plain") - pixels("compiled")).abs().max() <= 1
    assert torch.equal(pixels("compiled"), pixels("again"))  # the same compiled code on the same inputs


def test_a_folder_the_user_chose_for_compiled_code_is_kept(tmp_path, monkeypatch):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv(CACHE_VARIABLE, str(tmp_path / "mine"))
    assert keep_compiled_code(tmp_path / "ours") == tmp_path / "mine" and not (tmp_path / "ours").exists()
    # torch writes its own default into the variable when torch._dynamo is imported: not a choice
    monkeypatch.setenv(CACHE_VARIABLE, default_cache_dir())
    assert keep_compiled_code(tmp_path / "ours") == tmp_path / "ours" and (tmp_path / "ours").is_dir()
    assert os.environ[CACHE_VARIABLE] == str(tmp_path / "ours")
    monkeypatch.delenv(CACHE_VARIABLE)
    (tmp_path / "a-file").write_text("")
    assert keep_compiled_code(tmp_path / "a-file" / "cache") is None  # cannot be made: torch's default stays
    assert CACHE_VARIABLE not in os.environ
    assert keep_compiled_code(tmp_path / "theirs") == tmp_path / "theirs"


def test_regions_compiled_for_one_editor_are_not_reused_on_another_with_hooks(tiny_spec, editor64):
    """Dynamo keeps compiled regions per piece of Python, across modules: a region traced on a
    UNet without hooks (weight-swap) must not run on one whose forward model is hooks (low-rank)."""
    z0 = latent(8, 8)
    plain = Editor(load_model(tiny_spec, device="cpu", adapter_strategy="low-rank"))
    exact = editor64.invert_latent(z0.double(), "a photo of a cat", seed=3)
    error = Float32Error.measure(plain.invert_latent(z0, "a photo of a cat", seed=3), exact)
    options = CompileOptions(CountingBackend())  # one backend, as with the default "inductor"
    for strategy in ("weight-swap", "low-rank"):
        editor = Editor(load_model(tiny_spec, device="cpu", adapter_strategy=strategy), compile=options)
        got = editor.invert_latent(z0, "a photo of a cat", seed=3)  # the two strategies round differently
        assert_near_exact(got, exact, error, strategy)
