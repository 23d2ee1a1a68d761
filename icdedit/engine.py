"""The consistency engine: pure functions over a denoiser callable (docs/numerics.md sections 3-5).

A denoiser is `eps(x, t, step) -> noise prediction`; `step` is the index of the step within
its loop, which is how the loop tells attention control where it is. The UNet, prompts,
guidance embedding and attention control all live behind that callable, so the engine can
be tested against analytic denoisers and reads like the paper.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .schedule import NoiseSchedule, StepPlan

Denoiser = Callable[[torch.Tensor, int, int], torch.Tensor]
AfterStep = Callable[[int, torch.Tensor], torch.Tensor]


def consistency_jump(
    x: torch.Tensor, eps: torch.Tensor, t: int, boundary: int, schedule: NoiseSchedule
) -> torch.Tensor:
    """Jump from timestep t to `boundary` along the predicted trajectory (docs/numerics.md section 3).

    x0 = (x - sigma_t eps) / alpha_t, then re-noise to the boundary with the same eps; the
    boundary 0 is exact (alpha_0 := 1, sigma_0 := 0), as the released models were trained.
    """
    alpha_t, sigma_t = schedule.alpha(t).item(), schedule.sigma(t).item()
    x0 = (x - sigma_t * eps) / alpha_t
    if boundary == 0:
        return x0
    return schedule.alpha(boundary).item() * x0 + schedule.sigma(boundary).item() * eps


def noise_to_start(z0: torch.Tensor, noise: torch.Tensor, start_timestep: int, schedule: NoiseSchedule) -> torch.Tensor:
    """z = sqrt(abar_start) z0 + sqrt(1 - abar_start) noise (docs/numerics.md section 4, step 2)."""
    return schedule.alpha(start_timestep).item() * z0 + schedule.sigma(start_timestep).item() * noise


def invert(
    denoiser: Denoiser, z0: torch.Tensor, noise: torch.Tensor, plan: StepPlan, schedule: NoiseSchedule
) -> torch.Tensor:
    """Image latent -> noise latent with the forward consistency model (docs/numerics.md section 4)."""
    z = noise_to_start(z0, noise, plan.start_timestep, schedule)
    for step, (t, boundary) in enumerate(plan.forward):
        z = consistency_jump(z, denoiser(z, t, step), t, boundary, schedule)
    return z


def decode(
    denoiser: Denoiser,
    z_T: torch.Tensor,
    plan: StepPlan,
    schedule: NoiseSchedule,
    after_step: AfterStep | None = None,
) -> torch.Tensor:
    """Noise latent -> image latent with the reverse consistency model (docs/numerics.md section 5).

    `after_step(step, z)` runs after every jump, the last one included; local blend uses it.
    """
    z = z_T
    for step, (t, boundary) in enumerate(plan.reverse):
        z = consistency_jump(z, denoiser(z, t, step), t, boundary, schedule)
        if after_step is not None:
            z = after_step(step, z)
    return z
