"""The benchmark's official-style baselines compute the same edits as icdedit: otherwise
`make bench` would compare different work. (The SDXL fixtures are the tests' own.)"""

from __future__ import annotations

import torch

from icdedit.images import to_model_input
from icdedit.presets import load_preset
from tests.conftest import make_photo
from tests.test_sdxl import SOURCE, TARGET
from tests.tolerance import Float32Error, assert_near_exact


def test_benchmark_baseline_computes_the_same_edit(xl_spec, xl_editor, xl_editor64, xl_ref):
    """`make bench --arch sdxl` compares against BaselineXLEditor: it must do the same work."""
    from diffusers import UNet2DConditionModel
    from safetensors.torch import load_file

    from benchmarks.baseline import BaselineXLEditor

    config = UNet2DConditionModel.load_config(xl_spec.base, subfolder="unet")
    teacher = UNet2DConditionModel.from_config({**config, "time_cond_proj_dim": 512})
    teacher.load_state_dict(torch.load(xl_spec.teacher, weights_only=True))
    baseline = BaselineXLEditor(
        teacher=teacher,
        vae=xl_ref["vae"],
        text_encoders=xl_ref["encs"],
        tokenizers=xl_ref["toks"],
        forward_lora=load_file(str(xl_spec.forward_lora)),
        reverse_lora=load_file(str(xl_spec.reverse_lora)),
        device=torch.device("cpu"),
        dtype=torch.float32,
    )
    photo = make_photo(64, 64, seed=2)  # the start: a posterior sample from the seed's first draw
    exact0 = xl_editor64.start_latent(photo, 3)
    error0 = Float32Error.measure(xl_editor.start_latent(photo, 3), exact0)
    assert_near_exact(baseline.encode(to_model_input(photo), 3), exact0, error0, "posterior sample")
    z0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4))
    z_T = baseline.invert(z0, SOURCE, 1, list(xl_spec.forward_timesteps))
    exact_T = xl_editor64.invert_latent(z0.double(), SOURCE, 1)
    assert_near_exact(z_T, exact_T, Float32Error.measure(xl_editor.invert_latent(z0, SOURCE, 1), exact_T), "inversion")
    edited = baseline.decode(z_T, SOURCE, TARGET, list(xl_spec.reverse_timesteps), 7.0, 0.7)
    settings = load_preset("xl-default")
    exact, _ = xl_editor64.edit_latents(z_T.double(), SOURCE, [TARGET], settings, with_source=False)
    ours, _ = xl_editor.edit_latents(z_T, SOURCE, [TARGET], settings, with_source=False)
    assert_near_exact(edited, exact, Float32Error.measure(ours, exact), "edit")
