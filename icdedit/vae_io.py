"""Pixels to latents and back through the VAE (or the preview decoder): tiling for large
images, the scaling factor, the dtype the VAE runs in."""

from __future__ import annotations

import torch
from PIL import Image

from .images import from_model_output, to_model_input
from .loader import ModelBundle


def vae_scale(bundle: ModelBundle) -> int:
    """Pixels per latent cell along a side (8 for the released VAEs)."""
    return 2 ** (len(bundle.vae.config.block_out_channels) - 1)


def vae_for(bundle: ModelBundle, height: int, width: int):
    """The VAE, tiled for images over twice the model's resolution (memory grows with the
    square of the side; tiles blend at their seams, so smaller images stay untiled)."""
    vae = bundle.vae
    if hasattr(vae, "enable_tiling"):
        if max(height, width) > 2 * bundle.spec.resolution:
            vae.enable_tiling()
        else:
            vae.disable_tiling()
    return vae


def encode_posterior(bundle: ModelBundle, image: Image.Image, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """RGB image -> the VAE posterior's (mean, std), unscaled, in `dtype`."""
    vae = vae_for(bundle, image.height, image.width)
    pixels = to_model_input(image, dtype).to(bundle.device, vae.dtype)
    posterior = vae.encode(pixels).latent_dist
    return posterior.mean.to(dtype), posterior.std.to(dtype)


def decode_latents(bundle: ModelBundle, z: torch.Tensor, preview_decoder=None) -> list[Image.Image]:
    """Scaled latents -> images; with a preview decoder, TAESD reads the UNet's latents as they are."""
    if preview_decoder is not None:
        return from_model_output(preview_decoder(z.to(bundle.device, bundle.dtype)))
    scale = vae_scale(bundle)
    vae = vae_for(bundle, z.shape[2] * scale, z.shape[3] * scale)
    return from_model_output(vae.decode((z / bundle.vae_scaling_factor).to(vae.dtype)).sample)
