"""Random models with the released architectures, full size (SD1.5, SDXL) or tiny, built in
memory: what the benchmarks time and the GPU tests run, with nothing downloaded.

The architectures are the released models' diffusers configs (`architectures/*.json`: the UNet
with the guidance-embedding input the iCD teachers have, the VAE, the text encoders); the LoRAs
are random rank-`lora_rank` factors in the official PEFT layout. `random_editor` assembles
them as `load_model` does after reading files.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

ARCHITECTURES = Path(__file__).resolve().parent / "architectures"

ARCHS = ("sd15", "sdxl", "tiny", "tiny-xl")


def family_of(arch: str) -> str:
    return "sdxl" if arch in ("sdxl", "tiny-xl") else "sd15"


def _config(name: str) -> dict:
    return json.loads((ARCHITECTURES / f"{name}.json").read_text())


def random_components(arch: str, device: torch.device, seed: int, lora_rank: int) -> dict:
    """Tokenizer(s), text encoder(s), VAE, teacher UNet and both LoRAs, random, on `device`, float32."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from icdedit import tiny

    folder = Path(tempfile.mkdtemp(prefix="icdedit-bench-tok-"))
    tiny.tiny_tokenizer_files(folder)  # the real CLIP vocabulary is not needed to time the models
    tokenizer = CLIPTokenizer.from_pretrained(folder, model_max_length=77)
    torch.manual_seed(seed)
    parts = {"tokenizer": tokenizer}
    with torch.device(device):
        if arch in ("sd15", "sdxl"):
            unet = UNet2DConditionModel(**_config(f"{arch}_unet"))
            vae = AutoencoderKL(**_config(f"{arch}_vae"))
            text_encoder = CLIPTextModel(CLIPTextConfig(**_config(f"{arch}_text_encoder")))
            if arch == "sdxl":
                config = CLIPTextConfig(**_config("sdxl_text_encoder_2"))
                parts["text_encoder_2"] = CLIPTextModelWithProjection(config).eval()
        elif arch in ("tiny", "tiny-xl"):
            family = family_of(arch)
            unet, vae = tiny._tiny_unet(512, family), tiny._tiny_vae(family)
            text_encoder = tiny._tiny_text_encoder(len(tokenizer))
            if family == "sdxl":
                parts["text_encoder_2"] = tiny._tiny_text_encoder(len(tokenizer), with_projection=True).eval()
        else:
            raise SystemExit(f"unknown --arch {arch!r}")
    if "text_encoder_2" in parts:
        parts["tokenizer_2"] = tokenizer
    generator = torch.Generator().manual_seed(seed + 1)
    forward = {k: v.to(device) for k, v in tiny.random_peft_lora(unet, lora_rank, generator, std=0.01).items()}
    reverse = {k: v.to(device) for k, v in tiny.random_peft_lora(unet, lora_rank, generator, std=0.01).items()}
    return {
        **parts,
        "text_encoder": text_encoder.eval(),
        "vae": vae.eval(),
        "unet": unet.eval(),
        "forward": forward,
        "reverse": reverse,
    }


def random_spec(size: int, family: str = "sd15"):
    from icdedit.specs import ModelSpec

    name = "bench-sdxl" if family == "sdxl" else "bench-sd15"
    timesteps = (
        ((19, 249, 499, 699), (249, 499, 699, 999)) if family == "sdxl" else ((19, 259, 519, 779), (259, 519, 779, 999))
    )
    return ModelSpec(
        name=name,
        base="bench",
        teacher=Path("random"),
        forward_lora=Path("random-forward"),
        reverse_lora=Path("random-reverse"),
        forward_timesteps=timesteps[0],
        reverse_timesteps=timesteps[1],
        resolution=size,
        family=family,
    )


def random_bundle(parts: dict, size: int, device, dtype, *, adapter_strategy: str = "auto"):
    """A ModelBundle over the random components, as `load_model` assembles one (the components
    are consumed: `parts` is emptied, so that the bundle holds the only copy)."""
    from icdedit.loader import assemble_bundle
    from icdedit.lora import parse_peft_lora
    from icdedit.schedule import NoiseSchedule

    family = "sdxl" if "text_encoder_2" in parts else "sd15"
    bundle = assemble_bundle(
        random_spec(size, family),
        tokenizer=parts["tokenizer"],
        text_encoder=parts["text_encoder"],
        vae=parts["vae"],
        teacher=parts["unet"],
        forward=parse_peft_lora(parts["forward"], 8, "forward"),
        reverse=parse_peft_lora(parts["reverse"], 8, "reverse"),
        schedule=NoiseSchedule.scaled_linear(),
        device=device,
        dtype=dtype,
        adapter_strategy=adapter_strategy,
        tokenizer_2=parts.get("tokenizer_2"),
        text_encoder_2=parts.get("text_encoder_2"),
    )
    parts.clear()
    return bundle
