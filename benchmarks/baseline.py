"""The baseline: iCD editing organised the way the official research code organises it.

Three model copies (the teacher pipeline, and deep copies with the forward and the reverse
LoRA fused), classifier-free-guidance batches that keep the unconditional rows (2 rows to
invert, 2 (1 + n) to edit, half thrown away), and explicit attention probabilities in every
attention layer with an attention store of every map up to 32x32 (at 512 px). It shares
nothing with icdedit's engine or attention processors: its pieces are the tests' independent
reference (tests/reference.py).
"""

from __future__ import annotations

import copy

import torch

# The official-style pieces live with the tests' reference, which is written from the official code.
from tests.reference import (  # noqa: F401 - OfficialStyleController is re-exported for benchmarks.run
    OfficialStyleController,
    alphas_cumprod,
    fuse_lora,
    install_explicit,
    w_embedding,
    w_of_t,
)


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
    def encode(self, pixels, seed=0):
        """The img2img pipeline's `prepare_latents`, as the official inversion calls it: one CPU
        generator seeded with `seed`; its first draw samples the VAE posterior (`start` makes the
        next one, the start noise)."""
        vae = self.forward["vae"].to(torch.float32)
        posterior = vae.encode(pixels.to(self.device, torch.float32)).latent_dist
        return posterior.sample(torch.Generator().manual_seed(seed)).float() * 0.13025

    def start(self, z0, seed, t0):
        """z0 noised to t0 with the seed generator's second draw (its first sampled the posterior)."""
        generator = torch.Generator().manual_seed(seed)
        torch.randn(z0.shape, generator=generator)  # the posterior sample's draw, made in `encode`
        noise = torch.randn(z0.shape, generator=generator).to(self.device)
        return self.acp[t0].sqrt() * z0 + (1 - self.acp[t0]).sqrt() * noise

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
