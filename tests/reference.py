"""An independent, plain implementation of ICD_SPEC for the tests to compare against.

It is written the way the official research code is organised, not the way icdedit is:
separate merged UNets for the forward and reverse models, the LoRA deltas computed from the
raw safetensors keys, and (from the benchmark's baseline, which shares no code with icdedit's
engine or processors) explicit attention probabilities in every layer, an attention store of
every map, and local blend reading the official list positions (down[2:4] + up[:3]).
Slow and obvious on purpose.
"""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from benchmarks.baseline import (  # noqa: F401 - re-exported for the tests
    ExplicitProcessor,
    OfficialStyleController,
    alphas_cumprod,
    fuse_lora,
    install_explicit,
    w_embedding,
    w_of_t,
)


def merged_unet(teacher_path, lora_path, config: dict, alpha: float = 8.0, dtype: torch.dtype = torch.float32):
    """A fresh UNet = teacher + (alpha / r) B @ A, every delta computed from the raw keys, in
    `dtype` (float64: the exact model that the tests measure float32 errors against)."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config({**config, "time_cond_proj_dim": 512})
    unet.load_state_dict(torch.load(teacher_path, weights_only=True))
    unet.to(dtype)
    fuse_lora(unet, load_file(str(lora_path)), alpha)
    return unet.eval()


def jump(unet, x, t, s, emb, w, acp):
    """One consistency jump t -> s. The schedule and guidance embedding stay float32, as the
    official code computes them; a float64 UNet reads their (exact) float32 values."""
    x = x.to(unet.dtype)
    eps = unet(x, t, encoder_hidden_states=emb.to(unet.dtype), timestep_cond=w_embedding(w).to(unet.dtype)).sample
    a_t, s_t = acp[t].sqrt(), (1 - acp[t]).sqrt()
    x0 = (x - s_t * eps) / a_t
    if s == 0:
        return x0
    return acp[s].sqrt() * x0 + (1 - acp[s]).sqrt() * eps


@torch.no_grad()
def invert(fwd_unet, z0, emb, seed, timesteps, start=19):
    acp = alphas_cumprod()
    noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed))
    z = acp[start].sqrt() * z0 + (1 - acp[start]).sqrt() * noise
    boundaries = list(timesteps[1:]) + [999]
    for t, s in zip(timesteps, boundaries):
        z = jump(fwd_unet, z, t, s, emb, [0.0] * z.shape[0], acp)
    return z


@torch.no_grad()
def decode(rev_unet, z, emb, rows_w, timesteps):
    """rows_w(t) -> per-row guidance scales."""
    acp = alphas_cumprod()
    ts = sorted(timesteps, reverse=True)
    for t, s in zip(ts, ts[1:] + [0]):
        z = jump(rev_unet, z, t, s, emb, rows_w(t), acp)
    return z
