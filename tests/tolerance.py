"""How close two results must be: the one rule every numeric comparison in the tests follows.

Float32 results are not bit-equal across machines: vector width, MKL/oneDNN kernels and the
thread count change the order of the additions, and every order rounds differently. A
tolerance tuned on one machine fails on another, so none is tuned here. Each comes from the
arithmetic behind the quantity:

- **Exact** (`torch.equal`) only where both sides run the same kernels on the same inputs
  (the same call twice, a copy, an integer or a power-of-two result); each such test says so.
- **Short chains** (a few elementwise operations, one reduction): the textbook bound. Every
  float32 operation rounds by at most u = 2^-24 relative; n chained operations (a dot
  product of length n counts n) move a result by at most about n * u * scale, where scale is
  the size of the operands (Higham, *Accuracy and Stability of Numerical Algorithms*, ch. 3).
  Two implementations may each be off by that much: `rounding_tolerance`.
- **Networks** (a UNet, four consistency steps, a VAE): no useful a-priori bound exists, since
  each layer amplifies the error of the last by its own conditioning. So the error is measured
  on the computation itself: the same code in float32 and in float64 (`--dtype fp64`; float64
  rounds 2^29 times finer, so it stands in for the exact result). `Float32Error` is that
  difference relative to the result's size. Then
  - another float32 implementation of the same mathematics (icdedit against the official-
    style reference, a batch against its rows alone, xformers against SDPA), on any machine,
    lies within SAFETY float32 errors of the float64 result: `Float32Error.tolerance`;
  - two float64 implementations of it differ by the same amplification of float64's
    rounding, 2^29 times smaller: `Float32Error.float64_tolerance`. This is the sharp check
    that two codes compute the same mathematics (a one-ulp difference in an input shows).

SAFETY covers how that error varies between kernel orders: an error is a maximum over
thousands of elements of a sum of roundings, which varies by a small factor from one order to
another (on the machines tried, icdedit's float32 error was 0.7-2.2 times the reference's).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

UNIT_ROUNDOFF = torch.finfo(torch.float32).eps / 2  # 2^-24: float32's relative rounding error
UNIT_ROUNDOFF_64 = torch.finfo(torch.float64).eps / 2  # 2^-53
SAFETY = 8.0


def _scale(expected: torch.Tensor) -> float:
    return float(expected.detach().abs().max()) or 1.0


def rounding_tolerance(expected: torch.Tensor, operations: int) -> float:
    """Two float32 computations of `operations` chained operations on operands of the size
    of `expected`: each within operations * u * scale of the exact result."""
    return 2 * operations * UNIT_ROUNDOFF * _scale(expected)


@dataclass(frozen=True)
class Float32Error:
    """The float32 rounding error of one computation, relative to the size of its result."""

    relative: float

    @classmethod
    def measure(cls, float32_result: torch.Tensor, float64_result: torch.Tensor) -> Float32Error:
        assert float64_result.dtype == torch.float64, "the exact result is a float64 run"
        error = float((float32_result.detach().double() - float64_result.detach()).abs().max())
        # A float32 result is never closer to the exact value than one rounding of it.
        return cls(max(error / _scale(float64_result), UNIT_ROUNDOFF))

    def tolerance(self, exact: torch.Tensor) -> float:
        """How far a float32 result of this computation may lie from the float64 one."""
        return SAFETY * self.relative * _scale(exact)

    def float64_tolerance(self, exact: torch.Tensor) -> float:
        """How far two float64 implementations of this computation may lie apart."""
        return SAFETY * self.relative * (UNIT_ROUNDOFF_64 / UNIT_ROUNDOFF) * _scale(exact)


def assert_close(got: torch.Tensor, expected: torch.Tensor, tolerance: float, what: str = "") -> None:
    """max |got - expected| <= tolerance, with the numbers in the message when it fails."""
    assert got.shape == expected.shape, f"{what}: shape {tuple(got.shape)} != {tuple(expected.shape)}"
    difference = float((got.detach().double() - expected.detach().double()).abs().max())
    assert difference <= tolerance, f"{what}: max difference {difference:.3g} > tolerance {tolerance:.3g}"


def assert_near_exact(got: torch.Tensor, exact: torch.Tensor, error: Float32Error, what: str = "") -> None:
    """A float32 result against the float64 run of the same mathematics."""
    assert_close(got, exact, error.tolerance(exact), what)


def assert_same_mathematics(got64: torch.Tensor, exact: torch.Tensor, error: Float32Error, what: str = "") -> None:
    """Two float64 implementations (icdedit's and the reference's) of one computation."""
    assert got64.dtype == torch.float64, f"{what}: compare float64 runs"
    assert_close(got64, exact, error.float64_tolerance(exact), what)
