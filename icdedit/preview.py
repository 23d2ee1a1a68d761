"""The preview decoder (`--preview`): TAESD, a tiny distilled VAE decoder, in place of the VAE's.

The VAE decoder is the costliest network of an edit on the CPU (about 2 s of 16 at 256 px) and
about a fifth of it on a GPU. TAESD (madebyollin/taesd, taesdxl for SDXL) decodes the same
latents 12-14x faster on the CPU (docs/benchmarks.md), to an image that is close to the VAE's but
not equal. So it is for looking (trying prompts, tuning settings, the web page), never the
default, and every output it made says so.

It reads the latents as the UNet makes them: diffusers' AutoencoderTiny has scaling factor 1,
the VAE's own scaling is part of what TAESD learned. Each family names its decoder
(`Family.preview_decoder`, or None: that family has no --preview); a decoder lives in its own
folder under the weights folder, `$ICDEDIT_HOME/preview/<name>/`, as `save_pretrained` lays it
out (`icdedit download taesd` fetches it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .download import DownloadError, offline
from .errors import ModelError, first_line
from .families import FAMILIES
from .paths import weights_home

if TYPE_CHECKING:  # torch only in annotations: `icdedit models` lists the decoders without it
    import torch

    from .specs import ModelSpec

WEIGHTS = "diffusion_pytorch_model.safetensors"  # as diffusers saves AutoencoderTiny, and the hub holds it


@dataclass(frozen=True)
class PreviewDecoder:
    name: str
    hub_id: str
    approx_bytes: int

    @property
    def families(self) -> list[str]:
        """The families (their names) whose preview decoder this is: each family names its own."""
        return [name for name, family in FAMILIES.items() if family.preview_decoder == self.name]

    @property
    def family(self) -> str:
        return ", ".join(self.families)

    @property
    def description(self) -> str:
        return f"TAESD for {self.family}: fast approximate decoding (--preview)"

    @property
    def label(self) -> str:
        """How outputs it decoded name their decoder."""
        return f"{self.name} (approximate preview)"

    @property
    def folder(self) -> Path:
        return weights_home() / "preview" / self.name

    @property
    def present(self) -> bool:
        return all((self.folder / name).is_file() for name in ("config.json", WEIGHTS))

    def require(self) -> Path:
        if not self.present:
            raise ModelError(
                f"--preview: the preview decoder {self.name!r} is not in {self.folder}",
                f"run `icdedit download {self.name}` (needs network, about {self.approx_bytes // 1_000_000} MB), "
                "or leave out --preview",
            )
        return self.folder


PREVIEW_DECODERS = {
    decoder.name: decoder
    for decoder in (
        PreviewDecoder("taesd", "madebyollin/taesd", 10_000_000),
        PreviewDecoder("taesdxl", "madebyollin/taesdxl", 10_000_000),
    )
}


def decoder_for(model: ModelSpec | str) -> PreviewDecoder:
    """The preview decoder that the model's family names (`Family.preview_decoder`); a model (or
    a family, given by name) whose family names none is one ModelError naming it."""
    traits = FAMILIES[model] if isinstance(model, str) else model.traits
    if traits.preview_decoder is None:
        named = f"the {traits.label} family" if isinstance(model, str) else f"model {model.name!r} ({traits.label})"
        raise ModelError(f"--preview: {named} has no preview decoder", "leave out --preview (the VAE decodes)")
    return PREVIEW_DECODERS[traits.preview_decoder]


def load_preview_decoder(decoder: PreviewDecoder, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The decoder half of TAESD on `device` (its encoder is never used: inversion needs the
    VAE's exact posterior). TAESD is fp16-safe, so it runs in the model's dtype."""
    from diffusers import AutoencoderTiny

    try:
        model = AutoencoderTiny.from_pretrained(decoder.require(), use_safetensors=True)
    except (OSError, ValueError, RuntimeError) as exc:  # a cut-off file, a config of something else
        raise ModelError(
            f"--preview: the preview decoder in {decoder.folder} does not load ({first_line(exc)[:200]})",
            f"delete that folder and run `icdedit download {decoder.name}` again",
        ) from None
    return model.decoder.to(device, dtype).eval()


def download_preview_decoder(decoder: PreviewDecoder) -> Path:
    if decoder.present:
        return decoder.folder
    if offline():
        raise DownloadError(
            f"HF_HUB_OFFLINE is set: cannot fetch the preview decoder {decoder.name!r}",
            f"run `icdedit download {decoder.name}` on a machine with network and copy {decoder.folder} here",
        )
    from .eval_models import fetch_hub_folder

    return fetch_hub_folder(
        decoder.hub_id, decoder.folder, f"preview decoder {decoder.hub_id!r}", ["config.json", WEIGHTS]
    )
