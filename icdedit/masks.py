"""User masks (`--mask`): where an edit may change the photo.

A mask image (white = may change; any size and mode, read as grey levels) is fitted to the
photo's processing size, optionally feathered, and used twice (docs/numerics.md section 9):
- in latent space, after every reverse step: each target row is the source row wherever the
  mask is zero over a latent cell's whole 8 x 8 block, exactly (`blend_rows`);
- in pixel space, after the VAE and the resize to the photo's size: the edit is the source
  row's image wherever the mask (stretched back to the photo's size) is zero, exactly
  (`composite`), since the decoder and the resize mix neighbouring pixels.
With local blend (Prompt-to-Prompt) the mask bounds the blend: it is applied after it, so a
row changes only where both allow.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from .errors import InputError
from .images import load_image

ASPECT_TOLERANCE = 0.01  # relative difference of width / height that counts as another aspect ratio


def read_mask(path: Path) -> Image.Image:
    """A mask image as grey levels (L); missing, unreadable or all black is an InputError."""
    if not Path(path).is_file():
        raise InputError(f"mask not found: {path}", "give an image, white where the edit may change the photo")
    mask = load_image(path).convert("L")
    if mask.getextrema()[1] == 0:
        raise InputError(
            f"mask {path} is all black: nothing may change", "white marks where the edit may change the photo"
        )
    return mask


def aspect_note(mask: Image.Image, photo_size: tuple[int, int], name: str = "the mask") -> str | None:
    mask_ratio, photo_ratio = mask.width / mask.height, photo_size[0] / photo_size[1]
    if abs(mask_ratio / photo_ratio - 1) <= ASPECT_TOLERANCE:
        return None
    return (
        f"note: {name} is {mask.width}x{mask.height}, another aspect ratio than the photo's "
        f"{photo_size[0]}x{photo_size[1]}: it was stretched to fit"
    )


def fit_mask(
    mask: Image.Image | np.ndarray | torch.Tensor, size: tuple[int, int], feather: float = 0.0
) -> torch.Tensor:
    """The mask at `size` (width, height) as float32 (H, W) in [0, 1]; `feather` blurs its edge
    (a Gaussian of that radius in pixels at `size`), so the edit fades in."""
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if isinstance(mask, np.ndarray):
        array = np.asarray(mask, dtype=np.float32)
        if array.max() > 1:
            array = array / 255.0
        mask = Image.fromarray(np.round(np.clip(array, 0, 1) * 255).astype(np.uint8), "L")
    mask = mask.convert("L")
    if mask.size != tuple(size):
        mask = mask.resize(size, Image.Resampling.BILINEAR)
    if feather > 0:
        mask = mask.filter(ImageFilter.GaussianBlur(feather))
    return torch.from_numpy(np.asarray(mask, dtype=np.float32) / 255.0)


def latent_mask(pixel_mask: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """(1, 1, h, w): a latent cell's largest mask value over its pixel block, so a cell is kept
    as the source's only where the whole block is unedited."""
    return F.adaptive_max_pool2d(pixel_mask[None, None].float(), latent_size)


def blend_rows(z: torch.Tensor, start: int, count: int, mask: torch.Tensor) -> torch.Tensor:
    """Rows start + 1 .. start + count - 1 (the targets) kept equal to row `start` (the source)
    where `mask` is 0, exactly; mixed by the mask elsewhere."""
    source = z[start : start + 1]
    targets = z[start + 1 : start + count]
    mask = mask.to(z.device, z.dtype)
    kept = torch.where(mask > 0, source + mask * (targets - source), source)
    return torch.cat([z[: start + 1], kept, z[start + count :]])


def composite(source: Image.Image, edit: Image.Image, mask: torch.Tensor) -> Image.Image:
    """The edit where the mask allows, the source's pixels exactly where it is 0."""
    s = np.asarray(source, dtype=np.float32)
    e = np.asarray(edit, dtype=np.float32)
    m = mask.numpy()[:, :, None]
    mixed = np.where(m > 0, np.round(s + m * (e - s)), s)
    return Image.fromarray(mixed.astype(np.uint8), "RGB")


def outline(image: Image.Image, mask: torch.Tensor, colour=(255, 64, 64)) -> Image.Image:
    """The image with the mask's edge drawn on it (for side-by-side pictures)."""
    binary = Image.fromarray(((mask.numpy() > 0.5) * 255).astype(np.uint8), "L").resize(image.size)
    edge = np.asarray(binary) != np.asarray(binary.filter(ImageFilter.MinFilter(3)))
    out = np.array(image.convert("RGB"))
    out[edge] = colour
    return Image.fromarray(out, "RGB")
