"""The Editor: owns one loaded model and turns photos and prompts into inversions and edits.

It is the thin stateful shell around the pure engine: it builds the denoiser callables (UNet,
prompt embeddings, guidance embedding, attention control) and hands them to `engine`.
Load it once and reuse it: prompt embeddings are cached, and nothing is copied per call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import replace
from functools import wraps

import numpy as np
import torch
from PIL import Image

from . import engine, noise, vae_io
from .compiling import CompileOptions, compile_limits, compile_models
from .denoisers import OnStep, counting_steps, masked_steps, switching_prompts, telling_steps
from .graphs import GraphRunner, call_unet
from .images import (
    PreparedImage,
    check_size,
    prepare_image,
    processing_size,
    resize,
)
from .loader import ModelBundle, load_model
from .masks import composite, fit_mask, latent_mask
from .methods import edit_method
from .p2p.control import AttentionController, GroupedController, attention_control
from .p2p.plan import ControlPlan, EditWords, build_control_plan
from .precision import at_least_float32
from .presets import EditSettings
from .schedule import GENERATION_GUIDANCE, GENERATION_TAU, dynamic_guidance, guidance_embedding
from .specs import resolve_model
from .text import PromptCache, PromptEmbeddings, check_prompt, encode_prompts, encode_prompts_xl
from .values import EditJob, EditResult, Generation, Inversion, reconstruct_values

__all__ = ["EditJob", "EditResult", "Editor", "Generation", "Inversion", "counting_steps", "telling_steps"]


def _runs_networks(method):
    """Methods that run the UNet or the VAE: under compilation, with room for its variants."""

    @wraps(method)
    def run(self, *args, **kwargs):
        with compile_limits() if self.compiled else nullcontext():
            return method(self, *args, **kwargs)

    return run


class Editor:
    """`cuda_graphs=True` captures each UNet evaluation as a CUDA graph on first use and
    replays it afterwards: the first edit of a given shape pays for the capture, later ones
    run several times faster (see `graphs.py`). Off CUDA it changes nothing but bookkeeping.

    `compile=True` (or a `CompileOptions`) compiles the attention-free regions of the UNet and
    the VAE in place with `torch.compile` (see `compiling.py`): the first run of each shape
    pays for the compilation. The two combine: the graphs then replay the compiled kernels.

    `preview_decoder` (`preview.load_preview_decoder`) decodes every image in place of the
    VAE's decoder: much faster, approximate (TAESD)."""

    def __init__(
        self,
        bundle: ModelBundle,
        cuda_graphs: bool = False,
        compile: bool | CompileOptions = False,
        preview_decoder: torch.nn.Module | None = None,
    ):
        self.bundle = bundle
        self.preview_decoder = preview_decoder
        self._prompts = PromptCache(self._encode)  # a batch's prompts repeat (sources, grid cells)
        self._graphs = (
            GraphRunner(bundle.unet, bundle.device, bundle.dtype, bundle.attention_fn) if cuda_graphs else None
        )
        self.compiled = bool(compile)
        if compile:
            compile_models(
                bundle.unet, bundle.vae, compile if isinstance(compile, CompileOptions) else CompileOptions()
            )

    @classmethod
    def load(
        cls,
        model: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        cuda_graphs: bool = False,
        compile: bool | CompileOptions = False,
        attention: str = "auto",
    ) -> Editor:
        bundle = load_model(resolve_model(model), device=device, dtype=dtype, attention=attention)
        return cls(bundle, cuda_graphs=cuda_graphs, compile=compile)

    @property
    def latent_dtype(self) -> torch.dtype:
        """Latents between steps: float32 (the official code's) under any model dtype, float64
        under a float64 model."""
        return at_least_float32(self.bundle.dtype)

    @property
    def spec(self):
        return self.bundle.spec

    @property
    def tokenizer(self):
        return self.bundle.tokenizer

    @property
    def device(self) -> torch.device:
        return self.bundle.device

    # -- building blocks -------------------------------------------------------------------
    def prompt_embeddings(self, prompts: Sequence[str]) -> PromptEmbeddings:
        """The prompts' embeddings, one row each; every prompt is encoded once and cached."""
        return self._prompts(prompts)

    def _encode(self, prompts: list[str]) -> PromptEmbeddings:
        bundle = self.bundle
        if self.spec.traits.pooled_text:
            encoders = (bundle.text_encoder, bundle.text_encoder_2)
            return encode_prompts_xl((bundle.tokenizer, bundle.tokenizer_2), encoders, prompts, self.device)
        return PromptEmbeddings(encode_prompts(bundle.tokenizer, bundle.text_encoder, prompts, self.device))

    @_runs_networks
    @torch.no_grad()
    def encode_posterior(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        """RGB image -> the VAE posterior's (mean, std), unscaled, in the latent dtype."""
        return vae_io.encode_posterior(self.bundle, image, self.latent_dtype)

    def start_latent(self, image: Image.Image, seed: int) -> torch.Tensor:
        """z0, where inversion starts: the posterior mean (SD1.5 as released) or a sample of the
        posterior from the seed's first draw (SDXL as released, docs/numerics.md section 7), times
        the VAE's scaling factor."""
        mean, std = self.encode_posterior(image)
        posterior_eps, _ = noise.inversion_draws(tuple(mean.shape), seed, self.spec.traits.inversion_start)
        if posterior_eps is not None:
            mean = mean + std * posterior_eps.to(mean.device, mean.dtype)
        return mean * self.bundle.vae_scaling_factor

    @_runs_networks
    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> list[Image.Image]:
        return vae_io.decode_latents(self.bundle, z, self.preview_decoder)

    def denoiser(
        self,
        conditioning: PromptEmbeddings | Callable[[int], PromptEmbeddings],
        guidance: Callable[[int], list[float]],
        *,
        controller: AttentionController | None = None,
    ) -> engine.Denoiser:
        """eps(x, t, step): the UNet, with whichever adapter is active (`adapters.use`), with
        these prompts (or the prompts of timestep t) and per-row guidance scales w(t).

        `controller`: the attention control the UNet runs under, which CUDA graphs capture with
        it; the loop tells it the step through `telling_steps`."""
        unet, dtype, device = self.bundle.unet, self.bundle.dtype, self.device
        dim = self.spec.guidance_embed_dim

        def inputs_at(x: torch.Tensor, t: int) -> dict[str, torch.Tensor]:
            prompts = conditioning(t) if callable(conditioning) else conditioning
            w = torch.tensor(guidance(t), dtype=torch.float32)
            inputs = {
                "encoder_hidden_states": prompts.tokens.to(device, dtype),
                "timestep_cond": guidance_embedding(w, dim).to(device, dtype),
            }
            if prompts.pooled is not None:  # SDXL: pooled text and (original, crop, target) size ids
                inputs["text_embeds"] = prompts.pooled.to(device, dtype)
                inputs["time_ids"] = self._size_ids(x).to(device, dtype)
            return inputs

        @torch.no_grad()
        def eps(x: torch.Tensor, t: int, step: int) -> torch.Tensor:
            inputs = inputs_at(x, t)
            if self._graphs is None:
                return call_unet(unet, x.to(dtype), t, inputs).to(self.latent_dtype)
            # a graph holds the weights it was captured with: keyed by the adapter active now
            return self._graphs.evaluate((self.bundle.adapters.active, step), x, t, inputs, controller)

        return eps

    def _size_ids(self, x: torch.Tensor) -> torch.Tensor:
        """SDXL's micro-conditioning: original size, crop corner, target size, in pixels. The
        photo is processed whole at its processing size, so that size is both original and
        target and the crop is (0, 0), as the official code passes at 1024 x 1024."""
        height, width = x.shape[2] * vae_io.vae_scale(self.bundle), x.shape[3] * vae_io.vae_scale(self.bundle)
        return torch.tensor([[height, width, 0, 0, height, width]], dtype=torch.float32).expand(x.shape[0], -1)

    def processing_size(self, image_size: tuple[int, int], size: int | None = None) -> tuple[int, int]:
        """(width, height) a photo of `image_size` is processed at: the family's size rule
        (`images.processing_size`) for `size`, by default the model's resolution."""
        return processing_size(self.spec, image_size, size)

    def prepare_image(self, image: Image.Image, size: int | None = None) -> PreparedImage:
        return prepare_image(image, processing_size(self.spec, image.size, size))

    # -- inversion ---------------------------------------------------------------------------
    @_runs_networks
    @torch.no_grad()
    def invert_latents(
        self, z0: torch.Tensor, prompts: Sequence[str], seeds: Sequence[int], on_step: OnStep | None = None
    ) -> torch.Tensor:
        """z0 (B, 4, h, w) -> z_T with the forward model, each row's source prompt and w = 0
        (docs/numerics.md section 4). Each row's start noise is its seed's draw (`noise.py`): the
        same inversion on every device and in any batch."""
        start = self.spec.traits.inversion_start
        eps0 = torch.cat([noise.inversion_draws((1, *z0.shape[1:]), seed, start)[1] for seed in seeds])
        embeddings = self.prompt_embeddings(list(prompts))
        eps = counting_steps(self.denoiser(embeddings, lambda t: [0.0] * len(seeds)), on_step)
        with self.bundle.adapters.use("forward"):
            return engine.invert(eps, z0, eps0.to(self.device), self.bundle.plan, self.bundle.schedule)

    def invert_latent(self, z0: torch.Tensor, prompt: str, seed: int, on_step: OnStep | None = None) -> torch.Tensor:
        return self.invert_latents(z0, [prompt], [seed], on_step)

    def invert(
        self, image: Image.Image, prompt: str, seed: int = 0, size: int | None = None, on_step: OnStep | None = None
    ) -> Inversion:
        return self.invert_many([image], [prompt], [seed], size, on_step)[0]

    def invert_many(
        self,
        images: Sequence[Image.Image],
        prompts: Sequence[str],
        seeds: Sequence[int],
        size: int | None = None,
        on_step: OnStep | None = None,
    ) -> list[Inversion]:
        """Invert photos that share a processing size as one batch."""
        for prompt in prompts:
            check_prompt(prompt)
        prepared = [self.prepare_image(image, size) for image in images]
        if len({p.processed_size for p in prepared}) != 1:
            raise ValueError("photos inverted together must share a processing size")
        z0 = torch.cat([self.start_latent(p.processed, seed) for p, seed in zip(prepared, seeds)])
        z_T = self.invert_latents(z0, prompts, seeds, on_step).cpu()
        return [
            Inversion(z_T[i : i + 1], prompt, seed, p.processed_size, p.original_size)
            for i, (p, image, prompt, seed) in enumerate(zip(prepared, images, prompts, seeds))
        ]

    # -- decoding ----------------------------------------------------------------------------
    @_runs_networks
    @torch.no_grad()
    def decode_prompts(
        self,
        z_T: torch.Tensor,
        prompts: Sequence[str],
        guidance: float,
        tau: float,
        on_step: OnStep | None = None,
    ) -> torch.Tensor:
        """z_T (B, 4, h, w) -> final latents with the reverse model, row i under prompts[i], every
        row with the dynamic guidance w(t) of (guidance, tau): a reconstruction, or a generation
        (docs/numerics.md sections 5 and 8). No attention control, no unconditional rows."""
        w = dynamic_guidance(guidance, tau)
        embeddings = self.prompt_embeddings(list(prompts))
        eps = counting_steps(self.denoiser(embeddings, lambda t: [w(t)] * len(prompts)), on_step)
        with self.bundle.adapters.use("reverse"):
            return engine.decode(eps, z_T.to(self.device), self.bundle.plan, self.bundle.schedule)

    def reconstruct(
        self,
        inversion: Inversion,
        guidance: float | None = None,
        tau: float | None = None,
        on_step: OnStep | None = None,
    ) -> tuple[Image.Image, torch.Tensor]:
        """Decode an inversion with its own prompt and dynamic guidance; image at the input's size.
        Default: guidance 0, tau 0.8 (the editing source branch); generated noise: its own."""
        guidance, tau = reconstruct_values(inversion.trajectory, guidance, tau)
        z = self.decode_prompts(inversion.latent, [inversion.prompt], guidance, tau, on_step)
        return resize(self.decode_latents(z)[0], inversion.original_size), z.cpu()

    def generate(
        self,
        prompts: Sequence[str],
        seeds: Sequence[int],
        size: tuple[int, int] | None = None,
        guidance: float = GENERATION_GUIDANCE,
        tau: float = GENERATION_TAU,
        on_step: OnStep | None = None,
    ) -> list[Generation]:
        """Text to image, one image per (prompt, seed), decoded as one batch: each image's noise
        is its own seed's draw (`noise.generation_noise`), so any one of them can be made again
        alone. `size` is (width, height), by default the model's resolution squared."""
        if len(prompts) != len(seeds):
            raise ValueError(f"{len(prompts)} prompts but {len(seeds)} seeds")
        for prompt in prompts:
            check_prompt(prompt)
        width, height = size or (self.spec.resolution, self.spec.resolution)
        check_size(width, "--width"), check_size(height, "--height")
        scale = vae_io.vae_scale(self.bundle)
        shape = (1, self.bundle.unet.config.in_channels, height // scale, width // scale)
        z_T = torch.cat([noise.generation_noise(shape, seed) for seed in seeds]).to(self.latent_dtype)
        z = self.decode_prompts(z_T, prompts, guidance, tau, on_step)
        images = self.decode_latents(z)
        return [
            Generation(
                image,
                z[i : i + 1].cpu(),
                Inversion(z_T[i : i + 1], prompt, seed, *[(width, height)] * 2, guidance, tau),
            )
            for i, (image, prompt, seed) in enumerate(zip(images, prompts, seeds))
        ]

    def edit(
        self,
        inversion: Inversion,
        targets: Sequence[str],
        settings: EditSettings | None = None,
        *,
        source: str | None = None,
        amplify: Sequence[tuple[str, float]] | None = None,
        blend: Sequence[tuple[str, str]] | None = None,
        no_blend: bool = False,
        mask: Image.Image | np.ndarray | torch.Tensor | None = None,
        decode_source: bool = False,
        on_step: OnStep | None = None,
    ) -> EditResult:
        """Edit an inversion: one image per target prompt, at the input's size.

        `mask` (white / 1 = may change, any size: stretched to the photo) keeps every target
        equal to the source row outside it, exactly, in latent space at every step and in the
        decoded image (`masks.py`); with local blend, the edit stays inside both.

        `amplify` and `blend` (and `no_blend`) override the words derived from the prompts
        (see `p2p.plan.derive_edit_words`). The source row is only decoded to pixels when
        `decode_source` asks for it: it is a reconstruction, and the VAE decoder is the
        costliest network of the whole edit on the CPU.
        """
        fitted = None if mask is None else fit_mask(mask, inversion.processed_size)
        job = EditJob(inversion, list(targets), settings, source, amplify, blend, no_blend, mask=fitted)
        return self.edit_many([job], decode_source=decode_source, on_step=on_step)[0]

    @torch.no_grad()
    def edit_many(
        self,
        jobs: Sequence[EditJob],
        *,
        decode_source: bool = False,
        source_latent: bool = False,
        on_step: OnStep | None = None,
    ) -> list[EditResult]:
        """Several edits of inversions that share a latent size, decoded as one UNet batch.

        `decode_source`: also the source row's image (a reconstruction); `source_latent`: the
        source row in `EditResult.latents` even where the edit method does not need it."""
        jobs = [self._prepare(job) for job in jobs]
        latents = self._decode_jobs(jobs, on_step, with_source=decode_source or source_latent)
        # a masked job's source row is decoded too: outside the mask the edit is its pixels
        rows = [z if decode_source or job.mask is not None else z[-len(job.targets) :] for job, z in zip(jobs, latents)]
        images = self.decode_latents(torch.cat(rows))
        results, start = [], 0
        for job, z, own in zip(jobs, latents, rows):
            decoded = [resize(i, job.inversion.original_size) for i in images[start : start + len(own)]]
            start += len(own)
            if job.mask is not None:  # at the photo's size: what the user gets is exact outside the mask
                mask = fit_mask(job.mask, job.inversion.original_size)
                decoded = [decoded[0], *(composite(decoded[0], image, mask) for image in decoded[1:])]
            if decode_source:
                results.append(EditResult(decoded[1:], z.cpu(), job.words, source=decoded[0]))
            else:
                results.append(EditResult(decoded[-len(job.targets) :], z.cpu(), job.words))
        return results

    @torch.no_grad()
    def edit_latents(
        self,
        z_T: torch.Tensor,
        source: str,
        targets: Sequence[str],
        settings: EditSettings | None = None,
        *,
        amplify: Sequence[tuple[str, float]] | None = None,
        blend: Sequence[tuple[str, str]] | None = None,
        no_blend: bool = False,
        on_step: OnStep | None = None,
        with_source: bool = True,
    ) -> tuple[torch.Tensor, list[EditWords]]:
        """The final latents (rows: source, then targets) of one edit, without the VAE.

        Prompt-to-Prompt always decodes the source row (the targets' attention is built from
        it); the prompt switch alone decodes it only when `with_source` asks for it."""
        inversion = Inversion(z_T, source, 0, (0, 0), (0, 0))
        job = self._prepare(EditJob(inversion, list(targets), settings, source, amplify, blend, no_blend))
        return self._decode_jobs([job], on_step, with_source=with_source)[0], job.words

    def _prepare(self, job: EditJob) -> EditJob:
        """Prepare the job as the CLI does (preparation.prepare_edit), unless it was prepared
        already, and build its control plan when its method controls attention (no model needed)."""
        edit = job.edit
        if edit is None:  # the library's own call: prepared as `edit` prepares one (plans.py)
            from .plans import library_edit  # the planning layer sits above the Editor

            edit = library_edit(
                self.spec, job.inversion, job.targets, job.settings, job.source, job.amplify, job.blend, job.no_blend
            )
        job = replace(job, edit=edit, settings=edit.settings, source=edit.source, targets=list(edit.targets))
        if not edit_method(edit.method).controls_attention:
            return replace(job, control=None)
        control = build_control_plan(
            # SDXL: one token sequence of 77 positions with both encoders' states side by side;
            # its two tokenizers split text alike (one BPE vocabulary), so positions are the first's
            self.tokenizer,
            edit.source,
            edit.targets,
            edit.words,
            num_steps=self.bundle.plan.num_reverse_steps,
            cross_replace=edit.settings.cross_replace,
            self_replace=edit.settings.self_replace,
            blend_threshold=edit.settings.blend_threshold,
        )
        return replace(job, control=control)

    @_runs_networks
    def _decode_jobs(self, jobs: list[EditJob], on_step: OnStep | None, with_source: bool) -> list[torch.Tensor]:
        """The final latents of every job ([source,] targets): jobs under attention control as
        one batch, the others as another (a controller owns every row of its batch)."""
        shapes = {tuple(job.inversion.latent.shape) for job in jobs}
        if len(shapes) != 1:
            raise ValueError(f"edits decoded together must share a latent size, got {sorted(shapes)}")
        controlled = [i for i, job in enumerate(jobs) if job.control is not None]
        if self._graphs is not None and len(controlled) > 1:  # graphs hold one controller's buffers
            groups = [[i] for i in controlled]
        else:
            groups = [controlled] if controlled else []
        free = [i for i, job in enumerate(jobs) if job.control is None]
        groups += [free] if free else []
        latents: dict[int, torch.Tensor] = {}
        for group in groups:
            decoded = self._decode_rows([jobs[i] for i in group], on_step, with_source)
            latents.update(zip(group, decoded))
        return [latents[i] for i in range(len(jobs))]

    def _decode_rows(self, jobs: list[EditJob], on_step: OnStep | None, with_source: bool) -> list[torch.Tensor]:
        """Decode every job's rows from its z_T as one batch (docs/numerics.md sections 5-7).

        The source row has its own prompt and the guidance of the trajectory its noise lies on
        (w = 0 for an inverted photo; a generation's own guidance): a reconstruction. Each
        target row has the dynamic guidance w(t) and its own prompt, except that under the
        prompt switch its token embeddings are the amplify prompt's while t > tau x 1000 (the
        unguided steps lay out the photo as it was), its pooled embedding staying its own, as
        released. Under attention control the controller edits the targets' attention from the
        source row's. A guidance-distilled UNet needs no unconditional rows: an edit is 1 + n
        rows, not the official 2 (1 + n)."""
        rows = []  # (prompt, prompt while t > tau x 1000, tau, w(t)) per row
        for job in jobs:
            tau, switch_to, inversion = job.settings.tau, job.edit.amplify_prompt, job.inversion
            if job.decodes_source(with_source):
                source_w = dynamic_guidance(inversion.source_guidance, inversion.source_tau)
                rows.append((job.source, job.source, tau, source_w))
            w_of = dynamic_guidance(job.settings.guidance, tau)
            rows += [(target, switch_to or target, tau, w_of) for target in job.targets]
        own = self.prompt_embeddings([prompt for prompt, *_ in rows])
        conditioning: PromptEmbeddings | Callable[[int], PromptEmbeddings] = own
        if any(early != prompt for prompt, early, *_ in rows):
            early = self.prompt_embeddings([early for _, early, *_ in rows])
            conditioning = switching_prompts(own, early, [tau for _, _, tau, _ in rows])
        controller = self._controller([job.control for job in jobs], tuple(jobs[0].inversion.latent.shape[2:]))
        eps = self.denoiser(conditioning, lambda t: [w_of(t) for *_, w_of in rows], controller=controller)
        per_job = [len(job.targets) + job.decodes_source(with_source) for job in jobs]
        z_T = torch.cat([j.inversion.latent.to(self.device).expand(n, -1, -1, -1) for j, n in zip(jobs, per_job)])
        masks = [None if job.mask is None else latent_mask(job.mask, tuple(z_T.shape[2:])) for job in jobs]
        after_step = masked_steps(per_job, masks, controller)
        plan, schedule = self.bundle.plan, self.bundle.schedule
        with self.bundle.adapters.use("reverse"):
            if controller is None:
                z = engine.decode(counting_steps(eps, on_step), z_T, plan, schedule, after_step=after_step)
            else:
                eps = counting_steps(telling_steps(eps, controller), on_step)
                with attention_control(self.bundle.unet, controller):
                    z = engine.decode(eps, z_T, plan, schedule, after_step=after_step)
        return list(torch.split(z, per_job))

    def _controller(
        self, plans: list[ControlPlan | None], latent_size: tuple[int, int]
    ) -> AttentionController | GroupedController | None:
        """The attention controller of a batch of controlled jobs (one per job), or None."""
        if plans[0] is None:
            return None
        if self._graphs is not None:  # one job: _decode_jobs decodes controlled jobs one by one
            return self._graphs.controller(plans[0], latent_size)
        bundle = self.bundle
        controllers = [
            AttentionController(p, latent_size, self.device, bundle.dtype, bundle.attention_fn) for p in plans
        ]
        return controllers[0] if len(controllers) == 1 else GroupedController(controllers)
