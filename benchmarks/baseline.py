"""The baseline: iCD editing organised the way the official research code organises it.

Three model copies (the teacher pipeline, and deep copies with the forward and the reverse
LoRA fused), classifier-free-guidance batches that keep the unconditional rows (2 rows to
invert, 2 (1 + n) to edit, half thrown away), and explicit attention probabilities in every
attention layer with an attention store of every map up to 32x32 (at 512 px). It shares
nothing with icdedit's engine or attention processors, which is what makes it useful both
as the benchmark's baseline and as the tests' independent reference.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F


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
        maps = self.store["down"][2:4] + self.store["up"][:3]
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


class ThreePipelines:
    """What the official loaders hold: the teacher pipeline and two deep copies of it (every
    part, text encoders and VAE included), each copy with one LoRA fused into its UNet."""

    def __init__(self, base: dict, forward_lora, reverse_lora, device, dtype):
        self.device, self.dtype = device, dtype
        self.ldm = {k: m.to(device, dtype).eval() for k, m in base.items()}
        self.reverse = copy.deepcopy(self.ldm)
        fuse_lora(self.reverse["unet"], reverse_lora)
        self.forward = copy.deepcopy(self.ldm)
        fuse_lora(self.forward["unet"], forward_lora)
        self.acp = alphas_cumprod().to(device)

    def start(self, z0, seed, t0):
        """The inversion's start: z0 noised to t0 with CPU-seeded noise."""
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed)).to(self.device)
        return self.acp[t0].sqrt() * z0 + (1 - self.acp[t0]).sqrt() * noise

    def jump(self, z, eps, t, s):
        x0 = (z - (1 - self.acp[t]).sqrt() * eps) / self.acp[t].sqrt()
        return x0 if s == 0 else self.acp[s].sqrt() * x0 + (1 - self.acp[s]).sqrt() * eps


class BaselineEditor(ThreePipelines):
    """Three pipelines, uncond rows kept, explicit attention everywhere."""

    def __init__(self, *, teacher, vae, text_encoder, tokenizer, forward_lora, reverse_lora, device, dtype):
        super().__init__(
            {"unet": teacher, "vae": vae, "text_encoder": text_encoder}, forward_lora, reverse_lora, device, dtype
        )
        self.tokenizer = tokenizer

    @torch.no_grad()
    def context(self, model, prompts):
        def enc(texts):
            ids = self.tokenizer(
                texts,
                padding="max_length",
                max_length=self.tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            return model["text_encoder"](ids.to(self.device))[0]

        return torch.cat([enc([""] * len(prompts)), enc(prompts)])  # uncond rows first, as released

    @torch.no_grad()
    def eps(self, model, z, t, context, w_rows, controller=None):
        x = torch.cat([z, z]).to(self.dtype)  # the classifier-free-guidance batch
        cond = w_embedding(w_rows).to(self.device, self.dtype)
        out = model["unet"](x, t, encoder_hidden_states=context.to(self.dtype), timestep_cond=cond).sample
        return out.chunk(2)[1].float()  # the unconditional half is discarded

    @torch.no_grad()
    def encode(self, pixels):
        vae = self.ldm["vae"]
        return vae.encode(pixels.to(self.device, self.dtype)).latent_dist.mean.float() * 0.18215

    @torch.no_grad()
    def invert(self, z0, prompt, seed, timesteps):
        install_explicit(self.forward["unet"], None)
        context = self.context(self.forward, [prompt])
        z = self.start(z0, seed, timesteps[0])
        for t, s in zip(timesteps, list(timesteps[1:]) + [999]):
            z = self.jump(z, self.eps(self.forward, z, t, context, [0.0, 0.0]), t, s)
        return z

    @torch.no_grad()
    def decode(self, z_T, prompts, controller, timesteps, guidance, tau):
        install_explicit(self.reverse["unet"], controller)
        n = len(prompts)
        context = self.context(self.reverse, prompts)
        z = z_T.expand(n, -1, -1, -1)
        ts = sorted(timesteps, reverse=True)
        for k, (t, s) in enumerate(zip(ts, ts[1:] + [0])):
            controller.begin_step(k)
            w_rows = [0.0] * n + [0.0] + [w_of_t(t, guidance, tau)] * (n - 1)
            z = self.jump(z, self.eps(self.reverse, z, t, context, w_rows), t, s)
            z = controller.step_callback(z)
        return z

    @torch.no_grad()
    def to_pixels(self, z):
        return self.ldm["vae"].decode((z / 0.18215).to(self.dtype)).sample


class BaselineXLEditor(ThreePipelines):
    """The official SDXL code's way (running/sdxl/edit.py, utils/loading.py): three pipelines
    (deep copies, text encoders and VAE included), the target row decoded alone with the source
    prompt's token states while t > tau * 1000, diffusers' default fused attention, and the VAE
    upcast to float32 in place to encode and decode."""

    def __init__(self, *, teacher, vae, text_encoders, tokenizers, forward_lora, reverse_lora, device, dtype):
        base = {"unet": teacher, "vae": vae, "text_encoders": torch.nn.ModuleList(text_encoders)}
        super().__init__(base, forward_lora, reverse_lora, device, dtype)
        self.tokenizers = tokenizers

    @torch.no_grad()
    def embed(self, model, prompts):
        states = []
        for tokenizer, encoder in zip(self.tokenizers, model["text_encoders"]):
            ids = tokenizer(
                prompts,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            out = encoder(ids.to(self.device), output_hidden_states=True)
            states.append(out.hidden_states[-2])
            pooled = out[0]
        return torch.cat(states, -1), pooled

    @torch.no_grad()
    def eps(self, model, z, t, tokens, pooled, w):
        size = z.shape[-1] * 8
        time_ids = torch.tensor([[size, size, 0, 0, size, size]], device=self.device, dtype=self.dtype)
        cond = w_embedding([w]).to(self.device, self.dtype)
        return model["unet"](
            z.to(self.dtype),
            t,
            encoder_hidden_states=tokens.to(self.dtype),
            timestep_cond=cond,
            added_cond_kwargs={"text_embeds": pooled.to(self.dtype), "time_ids": time_ids},
        ).sample.float()

    @torch.no_grad()
    def encode(self, pixels):
        vae = self.forward["vae"].to(torch.float32)
        return vae.encode(pixels.to(self.device, torch.float32)).latent_dist.mean.float() * 0.13025

    @torch.no_grad()
    def invert(self, z0, prompt, seed, timesteps):
        tokens, pooled = self.embed(self.forward, [prompt])
        z = self.start(z0, seed, timesteps[0])
        for t, s in zip(timesteps, list(timesteps[1:]) + [999]):
            z = self.jump(z, self.eps(self.forward, z, t, tokens, pooled, 0.0), t, s)
        return z

    @torch.no_grad()
    def decode(self, z_T, source, target, timesteps, guidance, tau):
        src_tokens, _ = self.embed(self.reverse, [source])
        tgt_tokens, tgt_pooled = self.embed(self.reverse, [target])
        ts = sorted(timesteps, reverse=True)
        z = z_T
        for t, s in zip(ts, ts[1:] + [0]):
            tokens = src_tokens if t > tau * 1000 else tgt_tokens
            z = self.jump(z, self.eps(self.reverse, z, t, tokens, tgt_pooled, w_of_t(t, guidance, tau)), t, s)
        return z

    @torch.no_grad()
    def to_pixels(self, z):
        vae = self.reverse["vae"].to(torch.float32)
        return vae.decode(z.float() / 0.13025).sample
