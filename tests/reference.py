"""An independent, plain implementation of ICD_SPEC for the tests to compare against.

It is written the way the official research code is organised, not the way icdedit is:
separate merged UNets for the forward and reverse models, the LoRA deltas computed here from
the raw safetensors keys, explicit attention probabilities in every layer, an attention store
of every map, and local blend reading the official list positions (down[2:4] + up[:3]).
Slow and obvious on purpose.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

PREFIX = "unet.base_model.model."


def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    return torch.cumprod(1 - betas, 0)


def w_embedding(w: list[float], dim: int = 512) -> torch.Tensor:
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32)
    f = torch.exp(-k * math.log(10000.0) / (half - 1))
    v = torch.tensor(w, dtype=torch.float32)[:, None] * 1000.0 * f[None]
    return torch.cat([torch.sin(v), torch.cos(v)], 1)


def w_of_t(t: int, scale: float, tau: float) -> float:
    return scale if t / 1000 <= tau else 0.0


def merged_unet(teacher_path, lora_path, config: dict, alpha: float = 8.0):
    """A fresh UNet = teacher + (alpha / r) B @ A, every delta computed from the raw keys."""
    from diffusers import UNet2DConditionModel

    unet = UNet2DConditionModel.from_config({**config, "time_cond_proj_dim": 512})
    unet.load_state_dict(torch.load(teacher_path, weights_only=True))
    lora = load_file(str(lora_path))
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for key in lora:
            if not key.endswith("lora_A.weight"):
                continue
            module = key[len(PREFIX) : -len(".lora_A.weight")]
            a, b = lora[key], lora[key.replace("lora_A", "lora_B")]
            r = a.shape[0]
            weight = params[module + ".weight"]
            delta = b.flatten(1) @ a.flatten(1)
            weight += (alpha / r) * delta.reshape(weight.shape)
    return unet.eval()


def jump(unet, x, t, s, emb, w, acp):
    eps = unet(x, t, encoder_hidden_states=emb, timestep_cond=w_embedding(w)).sample
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
def decode(rev_unet, z, emb, rows_w, timesteps, step_callback=None, before_step=None):
    """rows_w(t) -> per-row guidance scales; step_callback(z) after each step."""
    acp = alphas_cumprod()
    ts = sorted(timesteps, reverse=True)
    for k, (t, s) in enumerate(zip(ts, ts[1:] + [0])):
        if before_step:
            before_step(k)
        z = jump(rev_unet, z, t, s, emb, rows_w(t), acp)
        if step_callback:
            z = step_callback(z)
    return z


# -- Prompt-to-Prompt, the official way ------------------------------------------------------------
class OfficialStyleController:
    """Explicit maps everywhere; controls rows [offset:] like the official controller's cond half."""

    def __init__(self, *, n_steps, mappers, equalizers, cross_alpha, self_steps, self_limit,
                 blend_words=None, blend_hw=None, threshold=0.3, offset=0):
        self.n_steps = n_steps
        self.mappers = mappers  # per target: ("replace", M) or ("refine", (index, weight))
        self.equalizers = equalizers  # per target (77,)
        self.cross_alpha = cross_alpha  # (N + 1, n, 77)
        self.self_steps = self_steps
        self.self_limit = self_limit
        self.blend_words = blend_words  # (rows, 77) 0/1 or None
        self.blend_hw = blend_hw
        self.threshold = threshold
        self.offset = offset
        self.step = 0
        self.store = {"down": [], "mid": [], "up": []}  # accumulated cross maps, per layer
        self.step_store = {"down": [], "mid": [], "up": []}

    def begin_step(self, k):
        self.step = k

    def end_step(self):
        for key in self.store:
            if not self.store[key]:
                self.store[key] = self.step_store[key]
            else:
                self.store[key] = [a + b for a, b in zip(self.store[key], self.step_store[key])]
        self.step_store = {"down": [], "mid": [], "up": []}

    def control(self, probs, is_cross, place):
        rows = probs[self.offset :]
        if is_cross and rows.shape[2] <= self.self_limit:
            pass  # stored below, after control (the official store aliases the edited tensor)
        base, tgt = rows[0], rows[1:]
        if is_cross:
            new = []
            for i, (kind, mapper) in enumerate(self.mappers):
                if kind == "replace":
                    mapped = torch.einsum("hpw,wn->hpn", base, mapper)
                else:
                    index, weight = mapper
                    mapped = base[:, :, index] * weight + tgt[i] * (1 - weight)
                mapped = mapped * self.equalizers[i]
                a = self.cross_alpha[self.step, i]
                new.append(mapped * a + (1 - a) * tgt[i])
            rows = torch.cat([base[None], torch.stack(new)])
            if rows.shape[2] <= self.self_limit:
                self.step_store[place].append(rows.clone())
        elif self.self_steps[0] <= self.step < self.self_steps[1] and rows.shape[2] <= self.self_limit:
            rows = torch.cat([base[None], base[None].expand_as(tgt)])
        return torch.cat([probs[: self.offset], rows])

    def step_callback(self, z):
        self.end_step()
        if self.blend_words is None:
            return z
        h, w = self.blend_hw
        maps = self.store["down"][2:4] + self.store["up"][:3]
        rows = z.shape[0]
        maps = torch.cat([m.reshape(rows, -1, 1, h, w, m.shape[-1]) for m in maps], dim=1)
        alpha = self.blend_words.reshape(rows, 1, 1, 1, 1, -1)
        maps = (maps * alpha).sum(-1).mean(1)
        maps = F.max_pool2d(maps, (3, 3), (1, 1), padding=(1, 1))
        mask = F.interpolate(maps, size=z.shape[2:])
        mask = mask / mask.max(2, keepdim=True)[0].max(3, keepdim=True)[0]
        mask = mask.gt(self.threshold)
        mask = (mask[:1] + mask).float()
        return z[:1] + mask * (z - z[:1])


class ExplicitProcessor:
    def __init__(self, controller, place):
        self.controller, self.place = controller, place

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        is_cross = encoder_hidden_states is not None
        context = encoder_hidden_states if is_cross else hidden_states
        b = hidden_states.shape[0]
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        d = q.shape[-1] // attn.heads

        def split(x):
            return x.view(b, -1, attn.heads, d).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        probs = (q @ k.transpose(-1, -2) * attn.scale).softmax(-1)
        probs = self.controller.control(probs, is_cross, self.place)
        out = (probs @ v).transpose(1, 2).reshape(b, -1, attn.heads * d)
        return attn.to_out[1](attn.to_out[0](out))


def install_explicit(unet, controller):
    procs = {name: ExplicitProcessor(controller, name.split("_")[0]) for name in unet.attn_processors}
    unet.set_attn_processor(procs)
