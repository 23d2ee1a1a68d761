"""Attention kernels: the choice between SDPA and xformers, and xformers wired into every layer.

xformers is not installed here (it needs a CUDA build of torch), so a stand-in module with
xformers' interface is put in its place: `memory_efficient_attention` over (B, L, heads, d)
tensors, written out with an explicit softmax. Handing it the (B, heads, L, d) layout by
mistake attends over the wrong axis and changes the results, which the tests would see.
"""

from __future__ import annotations

import json
import sys
import types

import pytest
import torch

from icdedit.attention import choose_attention, sdpa, xformers_attention
from icdedit.editor import Editor
from icdedit.errors import SettingsError
from icdedit.loader import load_model

from .tolerance import Float32Error, assert_near_exact, rounding_tolerance


@pytest.fixture
def fake_xformers(monkeypatch):
    calls = []

    def memory_efficient_attention(q, k, v, attn_bias=None, p=0.0, scale=None):
        assert attn_bias is None and p == 0.0
        calls.append(tuple(q.shape))
        q, k, v = (x.transpose(1, 2).float() for x in (q, k, v))  # (B, heads, L, d) for the math
        probs = (q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5).softmax(-1)
        return (probs @ v).transpose(1, 2)

    package = types.ModuleType("xformers")
    package.__version__ = "0.0.test"
    package.ops = types.ModuleType("xformers.ops")
    package.ops.memory_efficient_attention = memory_efficient_attention
    monkeypatch.setitem(sys.modules, "xformers", package)
    monkeypatch.setitem(sys.modules, "xformers.ops", package.ops)
    monkeypatch.setattr("icdedit.attention.xformers_installed", lambda: True)
    return calls


def test_xformers_kernel_equals_sdpa_in_our_layout(fake_xformers):
    q, k, v = (torch.randn(2, 4, n, 8, generator=torch.Generator().manual_seed(n)) for n in (16, 7, 7))
    # scores: dot products of 8 (their rounding scaled by up to max|q.k| ~ 10 in the softmax),
    # then a softmax and a weighted sum over 7 keys
    tolerance = rounding_tolerance(v, 8 * 10 + 7 + 7)
    assert torch.allclose(xformers_attention(q, k, v), sdpa(q, k, v), rtol=0, atol=tolerance)
    assert fake_xformers == [(2, 16, 4, 8)]  # (B, L, heads, d), as xformers wants


def test_explicit_choices_and_missing_xformers(monkeypatch):
    cpu = torch.device("cpu")
    assert choose_attention("sdpa", cpu, torch.float32) == "sdpa"
    monkeypatch.setattr("icdedit.attention.xformers_installed", lambda: False)
    assert choose_attention("auto", cpu, torch.float32) == "sdpa"
    with pytest.raises(SettingsError, match="xformers is not installed") as caught:
        choose_attention("xformers", cpu, torch.float32)
    assert "--attention sdpa" in caught.value.hint
    with pytest.raises(SettingsError, match="'flash9' is not a choice"):
        choose_attention("flash9", cpu, torch.float32)


def test_auto_measures_once_per_setup_and_keeps_the_faster(fake_xformers, tmp_path):
    cuda = torch.device("cuda")  # never touched: the timer and the setup key are stand-ins
    choices = tmp_path / "home" / "attention.json"
    timings = {"H100|float16": {"sdpa": 1.0, "xformers": 0.8}, "A10|float16": {"sdpa": 1.0, "xformers": 0.97}}
    measured = []

    def timer(device, dtype):
        measured.append(card[0])
        return timings[card[0]]

    card = ["H100|float16"]
    choose = lambda: choose_attention("auto", cuda, torch.float16, choices, timer, lambda d, t: card[0])  # noqa: E731
    assert choose() == "xformers" and choose() == "xformers"
    card[0] = "A10|float16"  # within the 5% margin: PyTorch's own kernels stay
    assert choose() == "sdpa"
    assert measured == ["H100|float16", "A10|float16"]  # each setup measured once
    saved = json.loads(choices.read_text())
    assert saved["H100|float16"]["kernel"] == "xformers" and saved["A10|float16"]["kernel"] == "sdpa"
    assert choose_attention("auto", torch.device("cpu"), torch.float32, choices, timer) == "sdpa"  # GPU kernels only
    choices.write_text("{not json")
    assert choose() == "sdpa" and len(measured) == 3  # an unreadable file is measured again, not fatal


def test_xformers_runs_every_fused_attention_and_edits_like_sdpa(tiny_spec, fake_xformers, editor64):
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    results = {}
    for kernel in ("sdpa", "xformers"):
        editor = Editor(load_model(tiny_spec, device="cpu", attention=kernel))
        assert editor.bundle.attention == kernel
        fake_xformers.clear()
        z_T = editor.invert_latent(z0, "a photo of a cat", seed=1)
        invert_calls = len(fake_xformers)
        edited, _ = editor.edit_latents(z_T, "a photo of a cat", ["a photo of a dog"])
        results[kernel] = (z_T, edited, invert_calls, len(fake_xformers) - invert_calls)
    assert results["sdpa"][2:] == (0, 0)
    layers = sum(1 for _ in editor.bundle.unet.attn_processors)
    assert results["xformers"][2] == 4 * layers  # every layer of every inversion step
    assert results["xformers"][3] > 0  # the edit's fused calls too (self-attention injection included)
    # both kernels' float32 results within float32 error of SDPA's float64 result
    exact_T = editor64.invert_latent(z0.double(), "a photo of a cat", seed=1)
    assert_near_exact(results["xformers"][0], exact_T, Float32Error.measure(results["sdpa"][0], exact_T), "inversion")
    exact, _ = editor64.edit_latents(results["sdpa"][0].double(), "a photo of a cat", ["a photo of a dog"])
    assert_near_exact(results["xformers"][1], exact, Float32Error.measure(results["sdpa"][1], exact), "edit")


def test_cli_rejects_a_missing_xformers_in_one_line(tiny_model, tmp_path, monkeypatch):
    from .helpers import assert_clean_error, make_photo, run

    monkeypatch.setattr("icdedit.attention.xformers_installed", lambda: False)
    make_photo(64, 64).save(tmp_path / "cat.png")
    result = run(
        "invert", tmp_path / "cat.png", "-p", "a cat", "-m", tiny_model, "--device", "cpu", "--attention", "xformers"
    )
    assert_clean_error(result, "--attention xformers: xformers is not installed")
