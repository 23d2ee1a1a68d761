import math

import pytest
import torch

from icdedit.schedule import NoiseSchedule, dynamic_guidance, guidance_embedding, plan_steps

from .tolerance import UNIT_ROUNDOFF


def test_schedule_matches_the_formula_in_float64():
    betas = torch.linspace(math.sqrt(0.00085), math.sqrt(0.012), 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)
    schedule = NoiseSchedule.scaled_linear()
    # float32: each of the 1000 products rounds once more (linspace, square and 1 - beta: 3 more)
    assert torch.allclose(schedule.alphas_cumprod.double(), abar, rtol=(1000 + 3) * UNIT_ROUNDOFF, atol=0)
    assert schedule.alpha(0).item() == pytest.approx(math.sqrt(1 - 0.00085), rel=5 * UNIT_ROUNDOFF)
    assert schedule.alpha(999).item() ** 2 + schedule.sigma(999).item() ** 2 == pytest.approx(1, abs=8 * UNIT_ROUNDOFF)


def test_schedule_from_scheduler_config_rejects_other_schedules():
    assert torch.equal(
        NoiseSchedule.from_scheduler_config({}).alphas_cumprod, NoiseSchedule.scaled_linear().alphas_cumprod
    )
    with pytest.raises(ValueError, match="scaled_linear"):
        NoiseSchedule.from_scheduler_config({"beta_schedule": "linear"})


def test_guidance_embedding_of_zero_is_zeros_then_ones():
    emb = guidance_embedding(torch.tensor([0.0]), 512)
    assert emb.shape == (1, 512)
    assert torch.equal(emb[0, :256], torch.zeros(256))
    assert torch.equal(emb[0, 256:], torch.ones(256))


def test_guidance_embedding_hand_computed_values():
    w = 19.0
    emb = guidance_embedding(torch.tensor([w, 1.0]), 512)
    for k in (0, 1, 100, 255):
        c = math.log(10000.0) / 255
        f = math.exp(-k * c)
        angle = w * 1000 * f
        # float32: the exponent k*c carries 2 roundings of size k*c*u, exp and the products
        # about 4 more; an angle error moves sin and cos by as much
        tolerance = angle * (2 * k * c + 4) * UNIT_ROUNDOFF + UNIT_ROUNDOFF
        assert emb[0, k].item() == pytest.approx(math.sin(angle), abs=tolerance)
        assert emb[0, 256 + k].item() == pytest.approx(math.cos(angle), abs=tolerance)
    # last frequency is 1e-4: w = 1 -> angle 0.1, a few roundings of 0.1 at most
    assert emb[1, 255].item() == pytest.approx(math.sin(0.1), abs=16 * UNIT_ROUNDOFF)
    assert emb[1, 511].item() == pytest.approx(math.cos(0.1), abs=16 * UNIT_ROUNDOFF)


def test_guidance_embedding_takes_w_as_is_not_w_minus_one():
    assert not torch.allclose(guidance_embedding(torch.tensor([1.0])), guidance_embedding(torch.tensor([0.0])))


def test_dynamic_guidance_with_equal_taus_switches_off_noisy_steps():
    w = dynamic_guidance(19.0, 0.8)
    assert w(999) == 0.0 and w(801) == 0.0
    assert w(800) == 19.0 and w(779) == 19.0 and w(0) == 19.0


def test_dynamic_guidance_is_linear_between_taus():
    w = dynamic_guidance(8.0, 0.4, 0.8)
    assert w(600) == pytest.approx(4.0)
    assert w(700) == pytest.approx(2.0)
    assert w(400) == 8.0 and w(800) == 0.0
    with pytest.raises(ValueError):
        dynamic_guidance(8.0, 0.8, 0.4)


def test_constant_guidance_with_tau_one():
    w = dynamic_guidance(7.0, 1.0)
    assert [w(t) for t in (999, 500, 0)] == [7.0, 7.0, 7.0]


@pytest.mark.parametrize(
    "forward, reverse, fwd_pairs, rev_pairs",
    [
        (
            [19, 259, 519, 779],
            [259, 519, 779, 999],
            [(19, 259), (259, 519), (519, 779), (779, 999)],
            [(999, 779), (779, 519), (519, 259), (259, 0)],
        ),
        (
            [19, 249, 499, 699],
            [249, 499, 699, 999],
            [(19, 249), (249, 499), (499, 699), (699, 999)],
            [(999, 699), (699, 499), (499, 249), (249, 0)],
        ),
        ([19, 339, 699], [339, 699, 999], [(19, 339), (339, 699), (699, 999)], [(999, 699), (699, 339), (339, 0)]),
    ],
)
def test_released_timestep_plans(forward, reverse, fwd_pairs, rev_pairs):
    before = (list(forward), list(reverse))
    plan = plan_steps(forward, reverse)
    assert plan.forward == tuple(fwd_pairs)
    assert plan.reverse == tuple(rev_pairs)
    assert plan.start_timestep == 19
    assert (forward, reverse) == before  # the caller's lists are never mutated


@pytest.mark.parametrize("forward, reverse", [([], [999]), ([19, 19], [999]), ([19], [1000]), ([259, 19], [999])])
def test_bad_plans_are_refused(forward, reverse):
    with pytest.raises(ValueError):
        plan_steps(forward, reverse)
