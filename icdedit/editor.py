"""The Editor: owns one loaded model and turns photos and prompts into inversions and edits.

It is the thin stateful shell around the pure engine: it builds the denoiser callables (UNet,
prompt embeddings, guidance embedding, attention control) and hands them to `engine`.
Load it once and reuse it: prompt embeddings are cached, and nothing is copied per call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from PIL import Image

from . import engine
from .graphs import GraphRunner
from .images import from_model_output, prepare_image, resize, to_model_input
from .loader import ModelBundle, load_model
from .p2p.control import AttentionController, GroupedController, attention_control
from .p2p.plan import ControlPlan, EditWords, build_control_plan, derive_all_edit_words
from .presets import EditSettings
from .schedule import dynamic_guidance, guidance_embedding
from .specs import resolve_model
from .text import check_prompt, encode_prompts

OnStep = Callable[[], None]


@dataclass(frozen=True)
class Inversion:
    """A photo encoded to noise by the forward model: everything needed to decode it again."""

    latent: torch.Tensor  # (1, 4, h, w) float32, on the CPU
    prompt: str
    seed: int
    processed_size: tuple[int, int]
    original_size: tuple[int, int]
    original: Image.Image | None = None  # the input photo, when inverted from one


@dataclass(frozen=True)
class EditJob:
    """One edit: an inversion, its target prompts and how to decode them."""

    inversion: Inversion
    targets: Sequence[str]
    settings: EditSettings = field(default_factory=EditSettings)
    source: str | None = None  # default: the inversion's prompt
    amplify: Sequence[tuple[str, float]] | None = None
    blend: Sequence[tuple[str, str]] | None = None
    no_blend: bool = False
    words: list[EditWords] | None = None  # filled in by Editor._prepare
    control: ControlPlan | None = None


@dataclass(frozen=True)
class EditResult:
    targets: list[Image.Image]  # one edited image per target prompt, at the input's size
    latents: torch.Tensor  # (1 + n, 4, h, w) final latents: source, then targets
    words: list[EditWords]
    source: Image.Image | None = None  # row 0 decoded (a reconstruction), when asked for


class Editor:
    """`cuda_graphs=True` captures each UNet evaluation as a CUDA graph on first use and
    replays it afterwards: the first edit of a given shape pays for the capture, later ones
    run several times faster (see `graphs.py`). Off CUDA it changes nothing but bookkeeping."""

    def __init__(self, bundle: ModelBundle, prompt_cache_size: int = 64, cuda_graphs: bool = False):
        self.bundle = bundle
        self._prompt_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._prompt_cache_size = prompt_cache_size
        self._graphs = GraphRunner(bundle.unet, bundle.device, bundle.dtype) if cuda_graphs else None

    @classmethod
    def load(cls, model: str | None = None, device: str = "auto", dtype: str = "auto", cuda_graphs: bool = False) -> Editor:
        return cls(load_model(resolve_model(model), device=device, dtype=dtype), cuda_graphs=cuda_graphs)

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
    def prompt_embeddings(self, prompts: Sequence[str]) -> torch.Tensor:
        """(B, 77, D) text embeddings, each prompt encoded once and cached."""
        missing = [p for p in dict.fromkeys(prompts) if p not in self._prompt_cache]
        if missing:
            encoded = encode_prompts(self.tokenizer, self.bundle.text_encoder, missing, self.device)
            for prompt, embedding in zip(missing, encoded):
                self._prompt_cache[prompt] = embedding
        for prompt in prompts:
            self._prompt_cache.move_to_end(prompt)
        while len(self._prompt_cache) > self._prompt_cache_size:
            self._prompt_cache.popitem(last=False)
        return torch.stack([self._prompt_cache[p] for p in prompts])

    def _vae_for(self, height: int, width: int):
        """The VAE, tiled for images over twice the model's resolution (memory grows with the
        square of the side; tiles blend at their seams, so smaller images stay untiled)."""
        vae = self.bundle.vae
        if hasattr(vae, "enable_tiling"):
            if max(height, width) > 2 * self.spec.resolution:
                vae.enable_tiling()
            else:
                vae.disable_tiling()
        return vae

    @torch.no_grad()
    def encode_image(self, image: Image.Image) -> torch.Tensor:
        """RGB image -> z0 = VAE posterior mean * scaling factor, float32 (ICD_SPEC section 4)."""
        vae = self._vae_for(image.height, image.width)
        pixels = to_model_input(image).to(self.device, vae.dtype)
        return vae.encode(pixels).latent_dist.mean.float() * self.bundle.vae_scaling_factor

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> list[Image.Image]:
        vae = self._vae_for(z.shape[2] * 8, z.shape[3] * 8)
        return from_model_output(vae.decode((z / self.bundle.vae_scaling_factor).to(vae.dtype)).sample)

    def denoiser(
        self,
        embeddings: torch.Tensor,
        guidance: Callable[[int], list[float]],
        *,
        model: str,
        controller: AttentionController | None = None,
        on_step: OnStep | None = None,
    ) -> engine.Denoiser:
        """eps(x, t, step): the UNet with these prompts and per-row guidance scales w(t).

        `model` names the active adapter ('forward' or 'reverse'), `controller` the attention
        control that the loop must tell which step it is on."""
        unet, dtype = self.bundle.unet, self.bundle.dtype
        dim = self.spec.guidance_embed_dim

        def cond_of(w: list[float]) -> torch.Tensor:
            return guidance_embedding(torch.tensor(w, dtype=torch.float32), dim).to(self.device, dtype)

        if self._graphs is not None:
            return self._graphs.denoiser(model, embeddings, guidance, cond_of, controller, on_step)

        @torch.no_grad()
        def eps(x: torch.Tensor, t: int, step: int) -> torch.Tensor:
            if controller is not None:
                controller.begin_step(step)
            out = unet(x.to(dtype), t, encoder_hidden_states=embeddings.to(dtype), timestep_cond=cond_of(guidance(t))).sample
            if on_step is not None:
                on_step()
            return out.float()

        return eps

    # -- inversion ---------------------------------------------------------------------------
    @torch.no_grad()
    def invert_latents(
        self, z0: torch.Tensor, prompts: Sequence[str], seeds: Sequence[int], on_step: OnStep | None = None
    ) -> torch.Tensor:
        """z0 (B, 4, h, w) -> z_T with the forward model, each row's source prompt and w = 0
        (ICD_SPEC section 4). Each row's start noise is drawn on the CPU from its own seeded
        generator, so a seed gives the same inversion on every device and in any batch."""
        noise = torch.cat([
            torch.randn((1, *z0.shape[1:]), generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
            for seed in seeds
        ])  # fmt: skip
        embeddings = self.prompt_embeddings(list(prompts))
        eps = self.denoiser(embeddings, lambda t: [0.0] * len(seeds), model="forward", on_step=on_step)
        with self.bundle.adapters.use("forward"):
            return engine.invert(eps, z0, noise.to(self.device), self.bundle.plan, self.bundle.schedule)

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
        prepared = [prepare_image(image, size or self.spec.resolution) for image in images]
        if len({p.processed_size for p in prepared}) != 1:
            raise ValueError("photos inverted together must share a processing size")
        z0 = torch.cat([self.encode_image(p.processed) for p in prepared])
        z_T = self.invert_latents(z0, prompts, seeds, on_step).cpu()
        return [
            Inversion(z_T[i : i + 1], prompt, seed, p.processed_size, p.original_size, image)
            for i, (p, image, prompt, seed) in enumerate(zip(prepared, images, prompts, seeds))
        ]

    # -- decoding ----------------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(
        self, inversion: Inversion, guidance: float = 0.0, tau: float = 0.8, on_step: OnStep | None = None
    ) -> tuple[Image.Image, torch.Tensor]:
        """Decode an inversion with its own prompt and dynamic guidance; image at the input's size."""
        w = dynamic_guidance(guidance, tau)
        eps = self.denoiser(self.prompt_embeddings([inversion.prompt]), lambda t: [w(t)], model="reverse", on_step=on_step)
        with self.bundle.adapters.use("reverse"):
            z = engine.decode(eps, inversion.latent.to(self.device), self.bundle.plan, self.bundle.schedule)
        return resize(self.decode_latents(z)[0], inversion.original_size), z.cpu()

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
        decode_source: bool = False,
        on_step: OnStep | None = None,
    ) -> EditResult:
        """Edit an inversion: one image per target prompt, at the input's size.

        `amplify` and `blend` (and `no_blend`) override the words derived from the prompts
        (see `p2p.plan.derive_edit_words`). The source row is only decoded to pixels when
        `decode_source` asks for it: it is a reconstruction, and the VAE decoder is the
        costliest network of the whole edit on the CPU.
        """
        job = EditJob(inversion, list(targets), settings or EditSettings(), source, amplify, blend, no_blend)
        return self.edit_many([job], decode_source=decode_source, on_step=on_step)[0]

    @torch.no_grad()
    def edit_many(self, jobs: Sequence[EditJob], *, decode_source: bool = False, on_step: OnStep | None = None) -> list[EditResult]:
        """Several edits of inversions that share a latent size, decoded as one UNet batch."""
        jobs = [self._prepare(job) for job in jobs]
        latents = self._decode_jobs(jobs, on_step)
        rows = [z if decode_source else z[1:] for z in latents]
        images = self.decode_latents(torch.cat(rows))
        results, start = [], 0
        for job, z, own in zip(jobs, latents, rows):
            decoded = [resize(i, job.inversion.original_size) for i in images[start : start + len(own)]]
            start += len(own)
            words = job.words
            if decode_source:
                results.append(EditResult(decoded[1:], z.cpu(), words, source=decoded[0]))
            else:
                results.append(EditResult(decoded, z.cpu(), words))
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
    ) -> tuple[torch.Tensor, list[EditWords]]:
        """The final latents (rows: source, then targets) of one edit, without the VAE."""
        inversion = Inversion(z_T, source, 0, (0, 0), (0, 0))
        job = self._prepare(EditJob(inversion, list(targets), settings or EditSettings(), source, amplify, blend, no_blend))
        return self._decode_jobs([job], on_step)[0], job.words

    def _prepare(self, job: EditJob) -> EditJob:
        """Check the prompts, derive the words and build the control plan (no model needed)."""
        source = check_prompt(job.source or job.inversion.prompt, "src")
        targets = [check_prompt(t, "tgt") for t in job.targets]
        if not targets:
            raise ValueError("edit needs at least one target prompt")
        s = job.settings
        words = derive_all_edit_words(source, targets, s.mode, s.amplify, job.amplify, job.blend, job.no_blend)
        control = build_control_plan(
            self.tokenizer, source, targets, words,
            num_steps=self.bundle.plan.num_reverse_steps, cross_replace=s.cross_replace,
            self_replace=s.self_replace, blend_threshold=s.blend_threshold,
        )  # fmt: skip
        return replace(job, source=source, targets=targets, words=words, control=control)

    def _decode_jobs(self, jobs: list[EditJob], on_step: OnStep | None) -> list[torch.Tensor]:
        """Decode source and targets of every job as one batch with Prompt-to-Prompt control
        (ICD_SPEC 5-6). In each job, the source row has w = 0 at every step (as released) and
        the targets the dynamic guidance w(t). A guidance-distilled UNet needs no unconditional
        rows, so an edit is 1 + n rows, not the official 2 (1 + n)."""
        if self._graphs is not None and len(jobs) > 1:  # graphs hold one controller's buffers
            return [z for job in jobs for z in self._decode_jobs([job], on_step)]
        shapes = {tuple(job.inversion.latent.shape) for job in jobs}
        if len(shapes) != 1:
            raise ValueError(f"edits decoded together must share a latent size, got {sorted(shapes)}")
        latent_size = tuple(jobs[0].inversion.latent.shape[2:])
        if self._graphs is not None:
            controller = self._graphs.controller(jobs[0].control, latent_size)
        else:
            controllers = [AttentionController(j.control, latent_size, self.device, self.bundle.dtype) for j in jobs]
            controller = controllers[0] if len(controllers) == 1 else GroupedController(controllers)
        schedules = [dynamic_guidance(j.settings.guidance, j.settings.tau) for j in jobs]

        def guidance(t: int) -> list[float]:
            return [w for job, w_of in zip(jobs, schedules) for w in [0.0] + [w_of(t)] * len(job.targets)]

        prompts = [p for job in jobs for p in [job.source, *job.targets]]
        eps = self.denoiser(self.prompt_embeddings(prompts), guidance, model="reverse", controller=controller,
                            on_step=on_step)  # fmt: skip
        rows = torch.cat([j.inversion.latent.to(self.device).expand(1 + len(j.targets), -1, -1, -1) for j in jobs])
        with self.bundle.adapters.use("reverse"), attention_control(self.bundle.unet, controller):
            z = engine.decode(eps, rows, self.bundle.plan, self.bundle.schedule, after_step=controller.after_step)
        return list(torch.split(z, [1 + len(j.targets) for j in jobs]))
