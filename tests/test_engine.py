"""The engine against analytic denoisers: for data that is one fixed latent z*, the true
noise of x_t = alpha_t z* + sigma_t eps is known in closed form, so inversion then decoding
must return z* to float precision."""

import pytest
import torch

from icdedit import engine
from icdedit.schedule import NoiseSchedule, plan_steps

from .tolerance import rounding_tolerance

SCHEDULE = NoiseSchedule.scaled_linear()


def exact_denoiser(z_star, log=None):
    def eps(x, t, step):
        if log is not None:
            log.append((t, step))
        return (x - SCHEDULE.alpha(t) * z_star) / SCHEDULE.sigma(t)

    return eps


def test_jump_to_boundary_zero_is_the_x0_prediction():
    x, eps = torch.full((1, 4, 2, 2), 0.7), torch.full((1, 4, 2, 2), -0.3)
    a, s = SCHEDULE.alpha(500).item(), SCHEDULE.sigma(500).item()
    out = engine.consistency_jump(x, eps, 500, 0, SCHEDULE)
    assert torch.allclose(out, torch.full_like(x, (0.7 + 0.3 * s) / a), atol=1e-6)


def test_jump_to_a_boundary_renoises_with_the_same_eps():
    x, eps = torch.full((1, 1, 1, 1), 0.2), torch.full((1, 1, 1, 1), 1.5)
    a_t, s_t = SCHEDULE.alpha(259).item(), SCHEDULE.sigma(259).item()
    a_s, s_s = SCHEDULE.alpha(519).item(), SCHEDULE.sigma(519).item()
    expected = a_s * (0.2 - s_t * 1.5) / a_t + s_s * 1.5
    assert engine.consistency_jump(x, eps, 259, 519, SCHEDULE).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    "forward, reverse", [([19, 259, 519, 779], [259, 519, 779, 999]), ([19, 339, 699], [339, 699, 999])]
)
def test_invert_then_decode_with_exact_denoiser_returns_the_latent(forward, reverse):
    plan = plan_steps(forward, reverse)
    z_star = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    z_T = engine.invert(exact_denoiser(z_star), z_star, noise, plan, SCHEDULE)
    # the exact forward model carries the start noise all the way to t = 999
    expected_T = SCHEDULE.alpha(999) * z_star + SCHEDULE.sigma(999) * noise
    # each jump is about 6 operations, and dividing by alpha (down to 0.068 at t = 999) or sigma
    # (down to 0.14 at t = 19) scales its rounding by up to 15: 4 jumps x 6 x 15 operations' worth
    operations = len(forward) * 6 * 15
    assert torch.allclose(z_T, expected_T, rtol=0, atol=rounding_tolerance(expected_T, operations))
    z0 = engine.decode(exact_denoiser(z_star), z_T, plan, SCHEDULE)
    assert torch.allclose(z0, z_star, rtol=0, atol=rounding_tolerance(z_star, operations))


def test_loops_visit_the_planned_timesteps_with_step_indices():
    plan = plan_steps([19, 259, 519, 779], [259, 519, 779, 999])
    z = torch.zeros(1, 1, 1, 1)
    log = []
    engine.invert(exact_denoiser(z, log), z, torch.ones_like(z), plan, SCHEDULE)
    assert log == [(19, 0), (259, 1), (519, 2), (779, 3)]
    log.clear()
    after = []
    engine.decode(exact_denoiser(z, log), z, plan, SCHEDULE, after_step=lambda k, x: after.append(k) or x)
    assert log == [(999, 0), (779, 1), (519, 2), (259, 3)]
    assert after == [0, 1, 2, 3]  # local blend runs after the last step too


def test_after_step_result_feeds_the_next_step():
    plan = plan_steps([19, 259], [259, 999])
    seen = []

    def eps(x, t, step):
        seen.append(x.clone())
        return torch.zeros_like(x)

    engine.decode(eps, torch.ones(1, 1, 1, 1), plan, SCHEDULE, after_step=lambda k, x: x * 0 + 5)
    assert seen[1].item() == 5
