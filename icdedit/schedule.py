"""Noise schedule, guidance embedding, dynamic guidance and step plans (docs/numerics.md sections 2, 4, 5).

Everything here is plain data or a pure function: the engine and the editor build these once
and pass them around explicitly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch is imported where a tensor is made: `icdedit --help` and specs read this module
    import torch

NUM_TRAIN_TIMESTEPS = 1000
# Text-to-image as the official launch scripts generate, both families: guidance 7, constant
# (tau 1: w(t) = 7 at every step, since t/1000 < 1 always).
GENERATION_GUIDANCE = 7.0
GENERATION_TAU = 1.0


@dataclass(frozen=True)
class NoiseSchedule:
    """alpha_t = sqrt(abar_t) and sigma_t = sqrt(1 - abar_t) for integer t in 0..T-1."""

    alphas_cumprod: torch.Tensor  # float32, shape (T,)

    @classmethod
    def scaled_linear(
        cls,
        beta_start: float = 0.00085,
        beta_end: float = 0.012,
        num_train_timesteps: int = NUM_TRAIN_TIMESTEPS,
    ) -> NoiseSchedule:
        import torch

        # Computed in float32 exactly like diffusers' schedulers, which the official code reads.
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
        return cls(torch.cumprod(1.0 - betas, dim=0))

    @classmethod
    def from_scheduler_config(cls, config: dict) -> NoiseSchedule:
        kind = config.get("beta_schedule", "scaled_linear")
        if kind != "scaled_linear":
            raise ValueError(f"unsupported beta_schedule {kind!r}: iCD checkpoints use 'scaled_linear'")
        return cls.scaled_linear(
            float(config.get("beta_start", 0.00085)),
            float(config.get("beta_end", 0.012)),
            int(config.get("num_train_timesteps", NUM_TRAIN_TIMESTEPS)),
        )

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def alpha(self, t: int) -> torch.Tensor:
        return self.alphas_cumprod[t].sqrt()

    def sigma(self, t: int) -> torch.Tensor:
        return (1.0 - self.alphas_cumprod[t]).sqrt()


def guidance_embedding(w: torch.Tensor, dim: int = 512) -> torch.Tensor:
    """Sinusoidal embedding of guidance scales `w` (shape (B,)) -> (B, dim), float32.

    w enters as is (diffusers' LCM pipeline feeds w - 1; iCD does not), so w = 0 embeds to
    256 zeros followed by 256 ones, not to a zero vector.
    """
    import torch

    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000.0) / (half - 1)))
    angles = (w.to(torch.float32) * 1000.0)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2 == 1:
        emb = torch.nn.functional.pad(emb, (0, 1))
    return emb


def dynamic_guidance(scale: float, tau1: float, tau2: float | None = None) -> Callable[[int], float]:
    """The paper's dynamic CFG as a pure t -> w function (docs/numerics.md section 5).

    w(t) = scale for t/1000 <= tau1, 0 for t/1000 >= tau2, linear in between. Every released
    setting uses tau1 = tau2 = tau, so guidance is simply off for the noisiest steps.
    """
    tau2 = tau1 if tau2 is None else tau2
    if tau2 < tau1:
        raise ValueError(f"tau2 ({tau2}) must not be below tau1 ({tau1})")

    def w(t: int) -> float:
        u = t / NUM_TRAIN_TIMESTEPS
        if u <= tau1:
            return scale
        if u >= tau2:
            return 0.0
        return scale * (tau2 - u) / (tau2 - tau1)

    return w


@dataclass(frozen=True)
class StepPlan:
    """The (t, boundary) pairs of both consistency models, computed once from a model spec."""

    start_timestep: int
    forward: tuple[tuple[int, int], ...]  # image -> noise, ascending t
    reverse: tuple[tuple[int, int], ...]  # noise -> image, descending t, last boundary 0

    @property
    def num_forward_steps(self) -> int:
        return len(self.forward)

    @property
    def num_reverse_steps(self) -> int:
        return len(self.reverse)


def plan_steps(
    forward_timesteps: Sequence[int],
    reverse_timesteps: Sequence[int],
    start_timestep: int | None = None,
    final_timestep: int = NUM_TRAIN_TIMESTEPS - 1,
) -> StepPlan:
    """Pair each timestep with its boundary as the released models were trained (docs/numerics.md sections 4-5).

    forward: zip(F, F[1:] + [999]); reverse: R descending, each to the next lower, the last to 0.
    """
    fwd = [int(t) for t in forward_timesteps]
    rev = sorted((int(t) for t in reverse_timesteps), reverse=True)
    if not fwd or not rev:
        raise ValueError("forward and reverse timesteps must not be empty")
    if fwd != sorted(set(fwd)) or len(set(rev)) != len(rev):
        raise ValueError(f"timesteps must be distinct and the forward ones ascending: {fwd}, {rev}")
    if not all(0 <= t <= final_timestep for t in fwd + rev):
        raise ValueError(f"timesteps must lie in 0..{final_timestep}: {fwd}, {rev}")
    start = fwd[0] if start_timestep is None else int(start_timestep)
    forward = tuple(zip(fwd, fwd[1:] + [final_timestep]))
    reverse = tuple(zip(rev, rev[1:] + [0]))
    return StepPlan(start_timestep=start, forward=forward, reverse=reverse)
