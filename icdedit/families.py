"""Model families: everything that differs between SD1.5 and SDXL, described in one place.

The loader, the Editor, the downloads, the preview decoder and the CLI ask a model's `Family`
(`spec.traits`) what to do; none of them names a family or asks "is it SDXL?". Adding a family
means adding its entry here (docs/numerics.md sections 2 and 7 say what the released code does
for each); nothing else needs to name it.
"""

from __future__ import annotations

from dataclasses import dataclass

# The edit methods are objects in methods.py (each declares what it reads); the names below stay
# importable from here for the modules that still import them with the family table.
from .methods import P2P, SWITCH

# How a photo's VAE latent becomes the start of inversion (docs/numerics.md sections 4 and 7).
POSTERIOR_MEAN = "posterior-mean"  # SD1.5 as released: the mean; the seed's first draw is the noise
POSTERIOR_SAMPLE = "posterior-sample"  # SDXL as released: mean + std * first draw; the noise is the next

_BASE_CONFIGS = ("model_index.json", "scheduler/*", "tokenizer/*", "unet/config.json", "text_encoder/config.json")
_WEIGHTS_FP32 = ("text_encoder/model.safetensors", "vae/diffusion_pytorch_model.safetensors")
_WEIGHTS_FP16 = ("text_encoder/model.fp16.safetensors", "vae/diffusion_pytorch_model.fp16.safetensors")


@dataclass(frozen=True)
class Family:
    name: str  # as model YAMLs write it
    label: str  # as people write it
    resolution: int  # photos are processed at about resolution^2 pixels (see size_by_area)
    size_by_area: bool  # True: any aspect ratio at resolution^2 pixels; False: the long side at resolution
    # (applied by images.processing_size, the one place the size rule is used)
    pooled_text: bool  # False: CLIP-L's last states. True: a second text encoder (with projection),
    # both encoders' penultimate states side by side, its pooled text and the size ids condition the UNet
    edit_method: str  # the default edit method, a key of methods.METHODS
    inversion_start: str  # POSTERIOR_MEAN or POSTERIOR_SAMPLE
    default_preset: str  # the edit settings used when neither a flag nor a row names a preset
    vae_float32_under_fp16: bool  # the VAE overflows in fp16 (diffusers' force_upcast)
    vae_scaling_factor: float  # the released VAE's (the loader reads the config; tiny models write it)
    tiny_model: str  # the built-in random-weight model of this family's topology (tiny.py)
    base_files: tuple[str, ...]  # what a download fetches from the base pipeline besides weights
    base_weights: dict[str, tuple[str, ...]]  # per variant (fp32, fp16): the weight files read
    approx_base_bytes: dict[str, int]  # per variant: the size of those weights
    preview_decoder: str | None = None  # its TAESD (a key of preview.PREVIEW_DECODERS); None: no --preview


FAMILIES: dict[str, Family] = {
    "sd15": Family(
        name="sd15",
        label="SD1.5",
        resolution=512,
        size_by_area=False,  # the long side at 512, as icdedit always has (the official code squashes to 512^2)
        pooled_text=False,
        edit_method=P2P,
        inversion_start=POSTERIOR_MEAN,
        default_preset="default",
        vae_float32_under_fp16=False,
        vae_scaling_factor=0.18215,
        tiny_model="tiny",
        base_files=(*_BASE_CONFIGS, "vae/config.json"),
        base_weights={"fp32": _WEIGHTS_FP32, "fp16": _WEIGHTS_FP16},
        approx_base_bytes={"fp32": 830_000_000, "fp16": 415_000_000},  # CLIP-L 123M + VAE 84M parameters
        preview_decoder="taesd",
    ),
    "sdxl": Family(
        name="sdxl",
        label="SDXL",
        resolution=1024,
        size_by_area=True,  # SDXL was trained on aspect-ratio buckets of about one megapixel
        pooled_text=True,
        # The released SDXL edit stays the default: the paper's SDXL numbers were made with it,
        # and no measurement with the real weights yet says Prompt-to-Prompt edits SDXL better.
        edit_method=SWITCH,
        inversion_start=POSTERIOR_SAMPLE,
        default_preset="xl-default",
        vae_float32_under_fp16=True,
        vae_scaling_factor=0.13025,
        tiny_model="tiny-xl",
        base_files=(*_BASE_CONFIGS, "tokenizer_2/*", "text_encoder_2/config.json", "vae/config.json"),
        base_weights={
            "fp32": (*_WEIGHTS_FP32, "text_encoder_2/model.safetensors"),
            "fp16": (*_WEIGHTS_FP16, "text_encoder_2/model.fp16.safetensors"),
        },
        approx_base_bytes={"fp32": 3_600_000_000, "fp16": 1_800_000_000},  # + the 695M second encoder
        preview_decoder="taesdxl",
    ),
}
DEFAULT_FAMILY = "sd15"
TINY_MODELS = {family.tiny_model: name for name, family in FAMILIES.items()}  # built on first use
