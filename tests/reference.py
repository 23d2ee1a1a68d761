"""An independent, plain implementation of the numerical contract (docs/numerics.md) for the tests to compare against.

It is written from the official research code, the way that code is organised, not the way
icdedit is, and shares no code with icdedit: separate merged UNets for the forward and
reverse models, the LoRA deltas computed from the raw safetensors keys, explicit attention
probabilities in every layer, an attention store of every map, and local blend reading the
official list positions (down[2:4] + up[:3]). The control data (mappers, windows, blend
words) comes from `official_plan.py`, built from the prompts. Slow and obvious on purpose.
The benchmark's official-style baseline (benchmarks/baseline.py) is built from these pieces.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from safetensors.torch import load_file


def alphas_cumprod() -> torch.Tensor:
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float32) ** 2
    return torch.cumprod(1 - betas, 0)


def w_embedding(w: list[float], dim: int = 512) -> torch.Tensor:
    """The official `guidance_scale_embedding` (utils/generation.py), operation for operation:
    its log is a float32 one, which rounds the frequencies differently from a float64 log."""
    half = dim // 2
    f = torch.exp(torch.arange(half, dtype=torch.float32) * -(torch.log(torch.tensor(10000.0)) / (half - 1)))
    v = (torch.tensor(w, dtype=torch.float32) * 1000.0)[:, None] * f[None]
    return torch.cat([torch.sin(v), torch.cos(v)], 1)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """x in float32, or in its own dtype when that is wider: the official code upcasts fp16 maps
    and softmaxes to float32; a float64 run (the tests' exact result) stays float64."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def w_of_t(t: int, scale: float, tau: float) -> float:
    return scale if t / 1000 <= tau else 0.0


def fuse_lora(unet: torch.nn.Module, lora: dict[str, torch.Tensor], alpha: float = 8.0) -> None:
    """W += (alpha / r) B @ A for every 'unet.base_model.model.<module>.lora_A.weight' key."""
    prefix = "unet.base_model.model."
    params = dict(unet.named_parameters())
    with torch.no_grad():
        for key, a in lora.items():
            if not key.endswith("lora_A.weight"):
                continue
            module = key[len(prefix) : -len(".lora_A.weight")]
            b = lora[key.replace("lora_A", "lora_B")]
            weight = params[module + ".weight"]
            wide = torch.promote_types(weight.dtype, torch.float32)
            delta = (b.flatten(1).to(wide) @ a.flatten(1).to(wide)) * (alpha / a.shape[0])
            weight += delta.reshape(weight.shape).to(weight.dtype)


class OfficialStyleController:
    """Prompt-to-Prompt as the official controller applies it, on rows [offset:] of the batch.

    Every map is explicit; cross maps of layers with at most `self_limit` queries are stored
    after control and summed over steps; local blend reads list positions down[2:4] + up[:3].
    """

    def __init__(
        self,
        *,
        mappers,
        equalizers,
        cross_alpha,
        self_steps,
        self_limit,
        blend_words=None,
        blend_hw=None,
        threshold=0.3,
        offset=0,
        blend_maps=None,
    ):
        self.mappers = mappers  # per target: ("replace", M (L, L)) or ("refine", (index, weight))
        self.equalizers = equalizers  # per target (L,)
        self.cross_alpha = cross_alpha  # (N + 1, n, L)
        self.self_steps = self_steps
        self.self_limit = self_limit
        self.blend_words = blend_words  # (rows, L) or None
        self.blend_hw = blend_hw
        self.threshold = threshold
        self.offset = offset
        # which stored maps local blend reads: the official list positions (SD1.5's 16x16
        # layers at 512 px) unless told otherwise (SDXL, which no official P2P code covers)
        self.blend_maps = blend_maps or (lambda store: store["down"][2:4] + store["up"][:3])
        self.step = 0
        self.store = {"down": [], "mid": [], "up": []}
        self.step_store = {"down": [], "mid": [], "up": []}

    def begin_step(self, k: int) -> None:
        self.step = k

    def control(self, probs: torch.Tensor, is_cross: bool, place: str) -> torch.Tensor:
        rows = probs[self.offset :]
        base, tgt = rows[0], rows[1:]
        if is_cross:
            new = []
            for i, (kind, mapper) in enumerate(self.mappers):
                if kind == "replace":
                    mapped = torch.einsum("hpw,wn->hpn", base, mapper.to(base.dtype))
                else:
                    index, weight = mapper
                    mapped = base[:, :, index] * weight + tgt[i] * (1 - weight)
                mapped = mapped * self.equalizers[i]
                a = self.cross_alpha[self.step, i]
                new.append(mapped * a + (1 - a) * tgt[i])
            rows = torch.cat([base[None], torch.stack(new)])
            if rows.shape[2] <= self.self_limit:
                self.step_store[place].append(rows)
        elif self.self_steps[0] <= self.step < self.self_steps[1] and rows.shape[2] <= self.self_limit:
            rows = torch.cat([base[None], base[None].expand_as(tgt)])
        return torch.cat([probs[: self.offset], rows])

    def step_callback(self, z: torch.Tensor) -> torch.Tensor:
        for key in self.store:
            if not self.store[key]:
                self.store[key] = self.step_store[key]
            else:
                self.store[key] = [a + b for a, b in zip(self.store[key], self.step_store[key])]
        self.step_store = {"down": [], "mid": [], "up": []}
        if self.blend_words is None:
            return z
        h, w = self.blend_hw
        maps = self.blend_maps(self.store)
        rows = z.shape[0]
        maps = at_least_float32(torch.cat([m.reshape(rows, -1, 1, h, w, m.shape[-1]) for m in maps], dim=1))
        alpha = self.blend_words.reshape(rows, 1, 1, 1, 1, -1).to(maps)
        maps = (maps * alpha).sum(-1).mean(1)
        maps = F.max_pool2d(maps, (3, 3), (1, 1), padding=(1, 1))
        mask = F.interpolate(maps, size=z.shape[2:])
        mask = mask / mask.max(2, keepdim=True)[0].max(3, keepdim=True)[0]
        mask = mask.gt(self.threshold)
        mask = (mask[:1] + mask).to(z.dtype)
        return z[:1] + mask * (z - z[:1])


class ExplicitProcessor:
    """Explicit softmax(q k^T) in every layer, handed to the controller (or left alone)."""

    def __init__(self, controller, place: str):
        self.controller, self.place = controller, place

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        is_cross = encoder_hidden_states is not None
        context = encoder_hidden_states if is_cross else hidden_states
        b = hidden_states.shape[0]
        q, k, v = attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context)
        d = q.shape[-1] // attn.heads

        def split(x):
            return x.view(b, -1, attn.heads, d).transpose(1, 2)

        q, k, v = split(q), split(k), split(v)
        probs = at_least_float32(q @ k.transpose(-1, -2) * attn.scale).softmax(-1).to(q.dtype)
        if self.controller is not None:
            probs = self.controller.control(probs, is_cross, self.place)
        out = (probs @ v).transpose(1, 2).reshape(b, -1, attn.heads * d)
        return attn.to_out[1](attn.to_out[0](out))


def install_explicit(unet: torch.nn.Module, controller) -> None:
    unet.set_attn_processor({name: ExplicitProcessor(controller, name.split("_")[0]) for name in unet.attn_processors})


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


# -- prompts and jumps as the official code computes them (SD1.5: `embed`; SDXL: `ref_embed`) ---------
def embed(ref, prompts):
    """The official SD1.5 prompt embedding: the text encoder's last states, padded to 77 tokens."""
    ids = ref["tok"](prompts, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return ref["te"](ids)[0]


def ref_invert(ref, image, prompt, seed):
    """The reference inversion of a photo: VAE posterior mean, then the forward model."""
    import numpy as np

    x = torch.from_numpy(np.array(image)).to(ref["vae"].dtype) / 127.5 - 1
    with torch.no_grad():
        z0 = ref["vae"].encode(x.permute(2, 0, 1)[None]).latent_dist.mean * 0.18215
    return invert(ref["fwd"], z0, embed(ref, [prompt]), seed, [19, 259, 519, 779])


@torch.no_grad()
def ref_embed(ref, prompts):
    """The official encode_prompt: penultimate states of both encoders, pooled from the second."""
    states = []
    for tok, enc in zip(ref["toks"], ref["encs"]):
        ids = tok(
            prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt"
        ).input_ids
        out = enc(ids, output_hidden_states=True)
        states.append(out.hidden_states[-2])
        pooled = out[0]
    return torch.cat(states, -1), pooled


@torch.no_grad()
def ref_jump(unet, x, t, s, tokens, pooled, w, size):
    acp, dtype = alphas_cumprod(), unet.dtype
    time_ids = torch.tensor([[size, size, 0, 0, size, size]], dtype=torch.float32).repeat(x.shape[0], 1)
    x = x.to(dtype)
    eps = unet(
        x,
        t,
        encoder_hidden_states=tokens.to(dtype),
        timestep_cond=w_embedding(w).to(dtype),
        added_cond_kwargs={"text_embeds": pooled.to(dtype), "time_ids": time_ids.to(dtype)},
    ).sample
    x0 = (x - (1 - acp[t]).sqrt() * eps) / acp[t].sqrt()
    return x0 if s == 0 else acp[s].sqrt() * x0 + (1 - acp[s]).sqrt() * eps


def official_pipeline(pipeline_class, ref, spec, unet):
    """A diffusers SDXL pipeline over the reference's models, as `load_models_xl` builds the
    official one (a DDIM scheduler from the base)."""
    from diffusers import DDIMScheduler

    return pipeline_class(
        vae=ref["vae"],
        text_encoder=ref["encs"][0],
        text_encoder_2=ref["encs"][1],
        tokenizer=ref["toks"][0],
        tokenizer_2=ref["toks"][1],
        unet=unet,
        scheduler=DDIMScheduler.from_pretrained(spec.base, subfolder="scheduler"),
    )
