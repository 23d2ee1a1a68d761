"""Every random draw of icdedit, in one place: float32, on the CPU, from one seeded generator
per image, so that a seed gives the same numbers on every device, in any batch, and in the
order the released code draws them (docs/numerics.md sections 4 and 7)."""

from __future__ import annotations

import torch

from .families import POSTERIOR_SAMPLE


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def inversion_draws(
    shape: tuple[int, ...], seed: int, inversion_start: str
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """(posterior eps, start noise) for one image's latent of `shape` (1, 4, h, w).

    SDXL as released (diffusers' img2img `prepare_latents`, one generator): the first draw samples
    the VAE posterior, the next one is the noise added at the start timestep. SD1.5 as released
    inverts from the posterior mean: its first draw is the noise, and there is no posterior eps.
    (The official fp16 SDXL run draws its noise in float16; on the CPU that equals the float32
    draw rounded whenever the count is a multiple of 16, as every latent's is: 4 x h x w with
    h, w multiples of 8. So one float32 draw serves every model dtype; tests/test_sdxl.py checks.)"""
    generator = seeded(seed)
    posterior = (
        torch.randn(shape, generator=generator, dtype=torch.float32) if inversion_start == POSTERIOR_SAMPLE else None
    )
    return posterior, torch.randn(shape, generator=generator, dtype=torch.float32)


def generation_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The start noise of one generated image of latent `shape` (1, 4, h, w): its seed's first
    draw, as the official SD1.5 generation draws it for its first batch when run with this seed
    (`init_latent`: torch.randn((1, 4, H/8, W/8), generator=torch.Generator().manual_seed(seed));
    later batches keep drawing from that generator). The official SDXL script seeds a generator
    with each batch's index and draws the batch's noise at once in fp16; with one prompt per
    batch that is this draw, rounded (docs/numerics.md section 8)."""
    return torch.randn(shape, generator=seeded(seed), dtype=torch.float32)
