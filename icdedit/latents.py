"""Latent files: the inverted noise (or final latents) plus what produced them, in safetensors.

The header's metadata records the model identity, prompt, seed and sizes, so a latent file
is reusable on its own and is refused by a model that did not make it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from . import __version__
from .errors import InputError
from .files import write_atomically
from .images import check_recorded_size, check_regular_file

LATENT_FORMAT = "icdedit-latent"


@dataclass(frozen=True)
class LatentFile:
    latent: torch.Tensor  # float32 (rows, 4, h, w), finite
    metadata: dict[str, str]  # its sizes readable (checked by load_latent)

    @property
    def prompt(self) -> str:
        return self.metadata.get("prompt", "")

    @property
    def seed(self) -> int:
        return int(self.metadata.get("seed", "0"))

    @property
    def original_size(self) -> tuple[int, int]:
        return _size(self.metadata.get("original_size", ""))

    @property
    def processed_size(self) -> tuple[int, int]:
        return _size(self.metadata.get("processed_size", ""))


def _size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    return int(width), int(height)


def size_text(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def save_latent(
    path: Path, latent: torch.Tensor, metadata: dict[str, str], extra: dict[str, torch.Tensor] | None = None
) -> Path:
    """`latent` (and any `extra` tensors, e.g. the edit's `mask`) with the metadata in the header."""
    from safetensors.torch import save_file

    header = {"format": LATENT_FORMAT, "icdedit_version": __version__, **{k: str(v) for k, v in metadata.items()}}
    tensors = {"latent": latent, **(extra or {})}
    tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in tensors.items()}
    return write_atomically(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))


def is_latent_file(path: Path) -> bool:
    return Path(path).suffix.lower() == ".safetensors"


def load_latent(path: Path) -> LatentFile:
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.exists():
        raise InputError(f"latent file not found: {path}", "check the path")
    check_regular_file(path, "latent file")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != LATENT_FORMAT:
                raise InputError(f"{path}: not an icdedit latent file", "use a file written by `icdedit invert`")
            if "latent" not in handle.keys():
                raise InputError(f"{path}: has no 'latent' tensor", "use a file written by `icdedit invert`")
            shape = tuple(handle.get_slice("latent").get_shape())
            _check_shape(shape, path)  # before reading: a huge tensor is refused, not allocated
            latent = handle.get_tensor("latent").float()
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(
            f"{path}: not a readable safetensors file ({exc})", "use a file written by `icdedit invert`"
        ) from None
    if not torch.isfinite(latent).all():
        raise InputError(f"{path}: the latent holds NaN or infinite values", "invert the photo again")
    for key in ("processed_size", "original_size"):
        try:
            width, height = _size(metadata.get(key, ""))
            if width <= 0 or height <= 0:
                raise ValueError
        except ValueError:
            raise InputError(
                f"{path}: metadata {key} = {metadata.get(key)!r} is not WIDTHxHEIGHT",
                "use a file written by `icdedit invert`",
            ) from None
        check_recorded_size((width, height), path, f"metadata {key}", processed=key == "processed_size")
    _check_seed(metadata.get("seed", "0"), path)
    return LatentFile(latent, metadata)


def _check_seed(text: str, path: Path) -> None:
    """The recorded seed (the noise of a photo's inversion) is a whole number in --seed's range."""
    from .presets import SEED_MAX

    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if not 0 <= seed <= SEED_MAX:
        raise InputError(
            f"{path}: metadata seed = {text!r} is not a whole number from 0 to {SEED_MAX}",
            "use a file written by `icdedit invert`, or invert the photo again",
        )


LATENT_SCALE = 8  # pixels per latent cell (the VAE's downsampling)


def _check_shape(shape: tuple[int, ...], path: Path) -> None:
    if len(shape) != 4 or shape[1] != 4 or 0 in shape:
        raise InputError(
            f"{path}: latent has shape {shape}, expected (rows, 4, h, w)", "use a file written by `icdedit invert`"
        )
    pixels = (shape[3] * LATENT_SCALE, shape[2] * LATENT_SCALE)
    check_recorded_size(pixels, path, f"latent of shape {shape} (pixels)", processed=True)


def check_same_model(latent: LatentFile, identity: dict[str, str], path: Path) -> None:
    """Refuse a latent made by another model: its noise means nothing to this one."""
    for key, value in identity.items():
        recorded = latent.metadata.get(key)
        if recorded != value:
            raise InputError(
                f"{path} was made by another model ({key} {recorded!r}, this model has {value!r})",
                f"decode it with --model {latent.metadata.get('model', '?')}, or invert the image again",
            )
