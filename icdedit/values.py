"""The values that flow between the planning, the Editor and the writing: an inversion, an edit
job, and what an edit or a generation gives back. Plain frozen data, no behaviour beyond
what each one says about itself."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from PIL import Image

from .p2p.plan import ControlPlan, EditWords
from .preparation import PreparedEdit
from .presets import EditSettings


@dataclass(frozen=True)
class Inversion:
    """A photo encoded to noise by the forward model: everything needed to decode it again."""

    latent: torch.Tensor  # (1, 4, h, w) float32, on the CPU
    prompt: str
    seed: int
    processed_size: tuple[int, int]
    original_size: tuple[int, int]
    # The guidance of the trajectory the noise lies on, which the source row is decoded with:
    # none for a photo (the forward model inverts the unguided trajectory), the generation's
    # own for generated noise, so that its source row is the generated image again.
    source_guidance: float = 0.0
    source_tau: float = 1.0

    @property
    def generated(self) -> bool:
        """Noise from `Editor.generate` (with guidance): edited as generated noise by default."""
        return self.source_guidance > 0

    @property
    def trajectory(self) -> dict[str, float]:
        """Generated noise's guidance and tau ({} for a photo's inversion), as a latent file records them."""
        return {"guidance": self.source_guidance, "tau": self.source_tau} if self.generated else {}


def reconstruct_values(trajectory: dict[str, float], guidance: float | None, tau: float | None) -> tuple[float, float]:
    """A reconstruction's guidance and tau: as given; else generated noise's own (`trajectory`);
    else the editing source branch's (w = 0, tau 0.8)."""
    guidance = guidance if guidance is not None else trajectory.get("guidance", 0.0)
    tau = tau if tau is not None else trajectory.get("tau", 0.8)
    return guidance, tau


@dataclass(frozen=True)
class EditJob:
    """One edit: an inversion, its target prompts and how to decode them."""

    inversion: Inversion
    targets: Sequence[str]
    settings: EditSettings | None = None  # default: the model's default preset
    source: str | None = None  # default: the inversion's prompt
    amplify: Sequence[tuple[str, float]] | None = None
    blend: Sequence[tuple[str, str]] | None = None
    no_blend: bool = False
    edit: PreparedEdit | None = None  # from preparation.prepare_edit (Editor._prepare when None)
    control: ControlPlan | None = None  # Prompt-to-Prompt's plan, built by Editor._prepare
    mask: torch.Tensor | None = None  # (H, W) in [0, 1] at the processing size: where it may change (masks.py)

    @classmethod
    def prepared(cls, inversion: Inversion, edit: PreparedEdit, mask: torch.Tensor | None = None) -> EditJob:
        """A job from an edit prepared before the model was loaded (nothing is derived again)."""
        return cls(inversion, list(edit.targets), edit.settings, edit.source, edit=edit, mask=mask)

    @property
    def words(self) -> list[EditWords]:
        return list(self.edit.words) if self.edit is not None else []

    def decodes_source(self, with_source: bool) -> bool:
        """Whether its source row is decoded: when asked, and always under attention control,
        which builds the targets' attention from it, or a mask, which keeps the targets to it."""
        return with_source or self.control is not None or self.mask is not None


@dataclass(frozen=True)
class Generation:
    """One generated image, its final latent, and its start noise as an inversion: edit it like
    a photo's (`Editor.edit(generation.noise, [...])`), with no inversion error."""

    image: Image.Image
    latent: torch.Tensor  # (1, 4, h, w) float32 final latent, on the CPU
    noise: Inversion


@dataclass(frozen=True)
class EditResult:
    targets: list[Image.Image]  # one edited image per target prompt, at the input's size
    latents: torch.Tensor  # (1 + n, 4, h, w) final latents: source, then targets
    words: list[EditWords]
    source: Image.Image | None = None  # row 0 decoded (a reconstruction), when asked for
