"""The Editor: owns one loaded model and turns photos and prompts into inversions and edits.

It is the thin stateful shell around the pure engine: it builds the denoiser callables (UNet,
prompt embeddings, guidance embedding, attention control) and hands them to `engine`.
Load it once and reuse it: prompt embeddings are cached, and nothing is copied per call.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from . import engine
from .graphs import GraphRunner
from .images import from_model_output, prepare_image, resize, to_model_input
from .loader import ModelBundle, load_model
from .p2p.control import AttentionController, attention_control
from .p2p.plan import EditWords, build_control_plan, derive_all_edit_words
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

    @torch.no_grad()
    def encode_image(self, image: Image.Image) -> torch.Tensor:
        """RGB image -> z0 = VAE posterior mean * scaling factor, float32 (ICD_SPEC section 4)."""
        vae = self.bundle.vae
        pixels = to_model_input(image).to(self.device, vae.dtype)
        return vae.encode(pixels).latent_dist.mean.float() * self.bundle.vae_scaling_factor

    @torch.no_grad()
    def decode_latents(self, z: torch.Tensor) -> list[Image.Image]:
        vae = self.bundle.vae
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
    def invert_latent(self, z0: torch.Tensor, prompt: str, seed: int, on_step: OnStep | None = None) -> torch.Tensor:
        """z0 -> z_T with the forward model, the source prompt and w = 0 (ICD_SPEC section 4).

        The start noise is drawn on the CPU from a seeded generator, so a seed gives the
        same inversion on every device.
        """
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)
        embeddings = self.prompt_embeddings([prompt])
        eps = self.denoiser(embeddings, lambda t: [0.0], model="forward", on_step=on_step)
        with self.bundle.adapters.use("forward"):
            return engine.invert(eps, z0, noise.to(self.device), self.bundle.plan, self.bundle.schedule)

    def invert(
        self, image: Image.Image, prompt: str, seed: int = 0, size: int | None = None, on_step: OnStep | None = None
    ) -> Inversion:
        check_prompt(prompt)
        prepared = prepare_image(image, size or self.spec.resolution)
        z_T = self.invert_latent(self.encode_image(prepared.processed), prompt, seed, on_step)
        return Inversion(z_T.cpu(), prompt, seed, prepared.processed_size, prepared.original_size, image)

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

    @torch.no_grad()
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
        source = check_prompt(source or inversion.prompt, "src")
        z, words = self.edit_latents(inversion.latent, source, targets, settings, amplify=amplify, blend=blend,
                                     no_blend=no_blend, on_step=on_step)  # fmt: skip
        rows = z if decode_source else z[1:]
        images = [resize(i, inversion.original_size) for i in self.decode_latents(rows)]
        if decode_source:
            return EditResult(images[1:], z.cpu(), words, source=images[0])
        return EditResult(images, z.cpu(), words)

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
        """Decode source and targets as one batch with Prompt-to-Prompt control (ICD_SPEC 5-6).

        Row 0 is the source prompt with w = 0 at every step (as released); rows 1..n are the
        targets with the dynamic guidance w(t). A guidance-distilled UNet needs no
        unconditional rows, so the batch is 1 + n, not the official 2 (1 + n).
        """
        settings = settings or EditSettings()
        targets = [check_prompt(t, "tgt") for t in targets]
        if not targets:
            raise ValueError("edit needs at least one target prompt")
        words = derive_all_edit_words(source, targets, settings.mode, settings.amplify, amplify, blend, no_blend)
        plan = self.bundle.plan
        control = build_control_plan(
            self.tokenizer, source, targets, words,
            num_steps=plan.num_reverse_steps, cross_replace=settings.cross_replace,
            self_replace=settings.self_replace, blend_threshold=settings.blend_threshold,
        )  # fmt: skip
        z_T = z_T.to(self.device)
        latent_size = tuple(z_T.shape[2:])
        if self._graphs is not None:
            controller = self._graphs.controller(control, latent_size)
        else:
            controller = AttentionController(control, latent_size, self.device, self.bundle.dtype)
        w = dynamic_guidance(settings.guidance, settings.tau)
        eps = self.denoiser(
            self.prompt_embeddings([source, *targets]),
            lambda t: [0.0] + [w(t)] * len(targets),
            model="reverse",
            controller=controller,
            on_step=on_step,
        )
        rows = z_T.expand(1 + len(targets), *z_T.shape[1:])
        with self.bundle.adapters.use("reverse"), attention_control(self.bundle.unet, controller):
            z = engine.decode(eps, rows, plan, self.bundle.schedule, after_step=controller.after_step)
        return z, words
