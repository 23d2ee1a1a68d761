"""Wrappers around a denoiser `eps(x, t, step)` and the decoding loop's step hook, composed by
the Editor's row decoder (k-diffusion's way: behaviour by wrapping, not by flags threaded
through the loop): telling the attention controller its step, counting steps for progress,
the prompt switch's conditioning, and the mask that keeps targets to their source row."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from . import engine
from .masks import blend_rows
from .p2p.control import AttentionController, GroupedController
from .text import PromptEmbeddings

OnStep = Callable[[], None]


def telling_steps(eps: engine.Denoiser, controller: AttentionController | GroupedController) -> engine.Denoiser:
    """The denoiser, telling the attention controller which step each evaluation belongs to
    (processors never count their own calls: docs/architecture.md)."""

    def told(x: torch.Tensor, t: int, step: int) -> torch.Tensor:
        controller.begin_step(step)
        return eps(x, t, step)

    return told


def counting_steps(eps: engine.Denoiser, on_step: OnStep | None) -> engine.Denoiser:
    """The denoiser, calling `on_step` after each evaluation (progress bars)."""
    if on_step is None:
        return eps

    def counted(x: torch.Tensor, t: int, step: int) -> torch.Tensor:
        out = eps(x, t, step)
        on_step()
        return out

    return counted


def switching_prompts(
    own: PromptEmbeddings, early: PromptEmbeddings, taus: Sequence[float]
) -> Callable[[int], PromptEmbeddings]:
    """The prompt switch: row i conditioned on `early`'s token embeddings while t > tau_i x 1000
    and on its own afterwards; the pooled embedding stays its own (as released)."""

    def conditioning(t: int) -> PromptEmbeddings:
        switched = torch.tensor([t > tau * 1000 for tau in taus], device=own.tokens.device)
        return PromptEmbeddings(torch.where(switched[:, None, None], early.tokens, own.tokens), own.pooled)

    return conditioning


def masked_steps(
    per_job: Sequence[int],
    masks: Sequence[torch.Tensor | None],
    controller: AttentionController | GroupedController | None,
) -> Callable[[int, torch.Tensor], torch.Tensor] | None:
    """After every reverse step: local blend (the controller's), then each job's latent mask,
    which keeps its targets to its source row outside the mask (so a mask bounds the blend).
    Job j owns `per_job[j]` consecutive rows, its source row first."""
    starts = [sum(per_job[:i]) for i in range(len(per_job))]
    masked = [(start, n, mask) for start, n, mask in zip(starts, per_job, masks) if mask is not None]
    if not masked:
        return controller.after_step if controller is not None else None

    def after_step(step: int, z: torch.Tensor) -> torch.Tensor:
        if controller is not None:
            z = controller.after_step(step, z)
        for start, n, mask in masked:
            z = blend_rows(z, start, n, mask)
        return z

    return after_step
