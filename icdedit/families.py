"""Model families: everything that differs between SD1.5 and SDXL, described in one place.

The loader, the Editor, the downloads and the CLI ask a model's `Family` what to do; none of
them names a family. Adding a family (or an edit method to one) means adding or changing its
entry here (docs/numerics.md sections 2 and 7 say what the released code does for each).
"""

from __future__ import annotations

from dataclasses import dataclass

# Edit methods (docs/numerics.md sections 6-7); any family can use any of them, and its
# `edit_method` is the one used when neither a flag, a preset nor a manifest row names one.
P2P = "p2p"  # Prompt-to-Prompt: attention control, source and targets in one batch (section 6)
SWITCH = "switch"  # the released SDXL edit: the amplify prompt's tokens in the unguided steps (section 7)
P2P_SWITCH = "p2p+switch"  # both: the switch in the high-noise steps, attention control throughout
EDIT_METHODS = {
    P2P: "Prompt-to-Prompt attention control (the released SD1.5 edit)",
    SWITCH: "prompt switch: the amplify prompt while t > tau x 1000 (the released SDXL edit)",
    P2P_SWITCH: "both: the prompt switch early, attention control throughout",
}


def controls_attention(method: str) -> bool:
    """Whether the method uses Prompt-to-Prompt, so --amplify, --blend, the windows and modes apply."""
    return method in (P2P, P2P_SWITCH)


def switches_prompts(method: str) -> bool:
    """Whether the method gives target rows the amplify prompt's tokens in the high-noise steps."""
    return method in (SWITCH, P2P_SWITCH)


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
    text_encoders: int  # 1: CLIP-L's last states; 2: both encoders' penultimate states, pooled text, size ids
    edit_method: str  # the default edit method, one of EDIT_METHODS
    inversion_start: str  # POSTERIOR_MEAN or POSTERIOR_SAMPLE
    default_preset: str  # the edit settings used when neither a flag nor a row names a preset
    vae_float32_under_fp16: bool  # the VAE overflows in fp16 (diffusers' force_upcast)
    vae_scaling_factor: float  # the released VAE's (the loader reads the config; tiny models write it)
    tiny_model: str  # the built-in random-weight model of this family's topology (tiny.py)
    base_files: tuple[str, ...]  # what a download fetches from the base pipeline besides weights
    base_weights: dict[str, tuple[str, ...]]  # per variant (fp32, fp16): the weight files read
    approx_base_bytes: dict[str, int]  # per variant: the size of those weights

    @property
    def pooled_text(self) -> bool:
        return self.text_encoders == 2


FAMILIES: dict[str, Family] = {
    "sd15": Family(
        name="sd15",
        label="SD1.5",
        resolution=512,
        size_by_area=False,  # the long side at 512, as icdedit always has (the official code squashes to 512^2)
        text_encoders=1,
        edit_method=P2P,
        inversion_start=POSTERIOR_MEAN,
        default_preset="default",
        vae_float32_under_fp16=False,
        vae_scaling_factor=0.18215,
        tiny_model="tiny",
        base_files=(*_BASE_CONFIGS, "vae/config.json"),
        base_weights={"fp32": _WEIGHTS_FP32, "fp16": _WEIGHTS_FP16},
        approx_base_bytes={"fp32": 830_000_000, "fp16": 415_000_000},  # CLIP-L 123M + VAE 84M parameters
    ),
    "sdxl": Family(
        name="sdxl",
        label="SDXL",
        resolution=1024,
        size_by_area=True,  # SDXL was trained on aspect-ratio buckets of about one megapixel
        text_encoders=2,
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
    ),
}
DEFAULT_FAMILY = "sd15"
TINY_MODELS = {family.tiny_model: name for name, family in FAMILIES.items()}  # built on first use
