"""Load an iCD model into one frozen bundle: one VAE, one text encoder, one UNet.

The UNet is built from the base folder's config with `time_cond_proj_dim` added, filled with
the teacher's state dict (never the base UNet's weights), the reverse LoRA merged into it,
and the forward LoRA available as a low-rank correction (see `lora.py`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from .attention import KERNELS, AttentionFn, choose_attention
from .download import download_command, hub_cache_dir
from .errors import ModelError, SettingsError, UsageError, first_line
from .lora import (
    AdapterSwitch,
    HybridSwitch,
    LowRankSwitch,
    WeightSwapSwitch,
    forward_merged_weights,
    merge_lora,
    read_peft_lora,
    swap_worthy_layers,
)
from .p2p.control import FixedAttention, install_processors
from .paths import weights_home
from .precision import at_least_float32
from .schedule import NoiseSchedule, StepPlan
from .specs import ModelSpec
from .weights import (
    MissingWeightsError,  # noqa: F401 - re-exported: where callers have always imported it
    ensure_weights,
)

log = logging.getLogger(__name__)

# fp64 is the reference precision: slow, for checking other precisions against (CPU)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16, "fp64": torch.float64}
ADAPTER_STRATEGIES = ("weight-swap", "hybrid", "low-rank")


@dataclass(frozen=True)
class ModelBundle:
    spec: ModelSpec
    plan: StepPlan
    schedule: NoiseSchedule
    tokenizer: object
    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    unet: torch.nn.Module
    adapters: AdapterSwitch
    device: torch.device
    dtype: torch.dtype
    attention: str = "sdpa"  # the fused attention kernel of the UNet (see `attention.py`)
    tokenizer_2: object = None  # SDXL's second tokenizer and text encoder (with projection)
    text_encoder_2: torch.nn.Module | None = None

    @property
    def vae_scaling_factor(self) -> float:
        return float(self.vae.config.scaling_factor)

    @property
    def attention_fn(self) -> AttentionFn:
        return KERNELS[self.attention]


def resolve_device(name: str = "auto") -> torch.device:
    """auto -> cuda if available, else mps, else cpu; cuda:N and the rest checked for existence."""
    name = (name or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"--device {name!r} is not a device", "use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SettingsError(f"--device {name}: CUDA is not available on this machine", "use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise SettingsError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SettingsError(f"--device {name}: MPS is not available on this machine", "use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device {name!r} is not supported", "use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto -> fp16 on CUDA (and MPS), fp32 on CPU."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.float16 if device.type in ("cuda", "mps") else torch.float32
    if name not in DTYPES:
        raise UsageError(f"--dtype {name!r} is not supported", f"use auto, {', '.join(DTYPES)}")
    return DTYPES[name]


def _base_kwargs(spec: ModelSpec) -> dict:
    # The base's files are on disk by the time it loads (`ensure_weights`): the hub is never asked
    # again, so --offline and HF_HUB_OFFLINE hold, and a cached base loads without network.
    return {"local_files_only": True}


def _load_base_part(loader, spec: ModelSpec, subfolder: str):
    try:
        try:
            return loader(spec.base, subfolder=subfolder, **_base_kwargs(spec))
        except OSError:
            if subfolder not in ("vae", "text_encoder", "text_encoder_2"):
                raise
            # `icdedit download` fetches only the fp16 weights for fp16 runs
            return loader(spec.base, subfolder=subfolder, variant="fp16", **_base_kwargs(spec))
    except (OSError, ValueError) as exc:
        first = first_line(exc)
        hint = (
            f"check the folder {spec.base}"
            if spec.base_is_local
            else f"run `{download_command(spec)}` (needs network; looked in {hub_cache_dir()}), "
            "or set base to a local folder"
        )
        raise ModelError(f"base model {spec.base!r}: cannot load {subfolder} ({first})", hint) from None


def _read_scheduler_config(spec: ModelSpec) -> dict:
    if spec.base_is_local:
        path = Path(spec.base) / "scheduler" / "scheduler_config.json"
        return json.loads(path.read_text()) if path.is_file() else {}
    try:
        from huggingface_hub import hf_hub_download

        return json.loads(
            Path(hf_hub_download(spec.base, "scheduler/scheduler_config.json", **_base_kwargs(spec))).read_text()
        )
    except Exception:  # noqa: BLE001 - the SD default below is what every iCD base uses
        log.debug("no scheduler config for %s; using SD's scaled_linear schedule", spec.base)
        return {}


def load_teacher_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The teacher UNet's state dict from `.pt` (weights_only: nothing is unpickled) or `.safetensors`."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means a bad file
        raise ModelError(
            f"{path}: not a readable teacher checkpoint ({type(exc).__name__}: {exc})".splitlines()[0],
            "re-download it; only plain tensor state dicts are accepted",
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ModelError(f"{path}: teacher checkpoint is not a state dict of tensors")
    return state


def build_teacher_unet(spec: ModelSpec):
    """UNet from the base config plus `time_cond_proj_dim`, holding the teacher's weights."""
    from diffusers import UNet2DConditionModel

    config = _load_base_part(UNet2DConditionModel.load_config, spec, "unet")
    config = {**config, "time_cond_proj_dim": spec.guidance_embed_dim}
    state = load_teacher_state_dict(spec.teacher)
    with torch.device("meta"):  # no random init of weights that are replaced at once
        unet = UNet2DConditionModel.from_config(config)
    expected = unet.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ModelError(
            f"{spec.teacher}: teacher does not fit the base UNet of {spec.base!r} ({detail})",
            "teacher and base must be the same architecture (an SD1.5 teacher with an SD1.5 base, SDXL with SDXL)",
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ModelError(
                f"{spec.teacher}: {key} has shape {tuple(state[key].shape)}, the UNet expects {tuple(tensor.shape)}",
                "teacher and base must be the same architecture",
            )
    unet.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    return unet.eval().requires_grad_(False)


def base_variant(dtype: torch.dtype) -> str:
    """Which base weights a run in `dtype` reads (and a download fetches): fp16 or fp32."""
    return "fp16" if dtype == torch.float16 else "fp32"


def load_model(
    spec: ModelSpec,
    device: str = "auto",
    dtype: str = "auto",
    adapter_strategy: str = "auto",
    attention: str = "auto",
    offline: bool = False,
    reporter=None,
) -> ModelBundle:
    """Load every part of `spec` once; the result is reused for any number of edits. What is not
    on disk is fetched first (as `from_pretrained` does), unless `offline` or HF_HUB_OFFLINE:
    then one error names every missing file (`weights.ensure_weights`; `reporter` hears about
    the download). `adapter_strategy`: how the forward model is switched in (see
    `assemble_bundle`); `attention`: auto, sdpa or xformers (see `attention.py`)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)
    kernel = choose_attention(attention, torch_device, torch_dtype, weights_home() / "attention.json")
    ensure_weights(spec, base_variant(torch_dtype), offline_flag=offline, reporter=reporter)
    second_encoder = {}
    if spec.traits.pooled_text:
        second_encoder = dict(
            tokenizer_2=_load_base_part(CLIPTokenizer.from_pretrained, spec, "tokenizer_2"),
            text_encoder_2=_load_base_part(CLIPTextModelWithProjection.from_pretrained, spec, "text_encoder_2"),
        )
    return assemble_bundle(
        spec,
        tokenizer=_load_base_part(CLIPTokenizer.from_pretrained, spec, "tokenizer"),
        text_encoder=_load_base_part(CLIPTextModel.from_pretrained, spec, "text_encoder"),
        vae=_load_base_part(AutoencoderKL.from_pretrained, spec, "vae"),
        teacher=build_teacher_unet(spec),
        forward=read_peft_lora(spec.forward_lora, spec.lora_alpha),
        reverse=read_peft_lora(spec.reverse_lora, spec.lora_alpha),
        schedule=NoiseSchedule.from_scheduler_config(_read_scheduler_config(spec)),
        device=torch_device,
        dtype=torch_dtype,
        adapter_strategy=adapter_strategy,
        attention=kernel,
        **second_encoder,
    )


def assemble_bundle(
    spec: ModelSpec,
    *,
    tokenizer,
    text_encoder: torch.nn.Module,
    vae: torch.nn.Module,
    teacher: torch.nn.Module,
    forward: dict,
    reverse: dict,
    schedule: NoiseSchedule,
    device: torch.device,
    dtype: torch.dtype,
    adapter_strategy: str = "auto",
    attention: str = "sdpa",
    tokenizer_2=None,
    text_encoder_2: torch.nn.Module | None = None,
) -> ModelBundle:
    """Merge the reverse LoRA into the teacher (in float32, before the cast), move everything
    to the device, and attach the forward model: as swapped merged weights on CUDA; on the CPU
    swapped for the narrow layers and a low-rank correction for the wide ones (see `lora.py`;
    `adapter_strategy` overrides: weight-swap, hybrid or low-rank).
    `attention` names the fused kernel ('sdpa': diffusers' own processors stay)."""
    if adapter_strategy == "auto":
        adapter_strategy = "weight-swap" if device.type == "cuda" else "hybrid"
    if adapter_strategy not in ADAPTER_STRATEGIES:
        raise ValueError(f"unknown adapter strategy {adapter_strategy!r}")
    teacher.to(at_least_float32(dtype))  # LoRAs merge in float32 (float64 for a float64 model)
    forward_weights = None  # computed before the reverse LoRA is merged, for the swapped layers only
    if adapter_strategy != "low-rank":
        swapped = set(forward) | set(reverse)
        if adapter_strategy == "hybrid":
            swapped = swap_worthy_layers(teacher, forward, reverse)
        forward_weights = forward_merged_weights(
            teacher,
            {n: f for n, f in forward.items() if n in swapped},
            {n: f for n, f in reverse.items() if n in swapped},
            spec.forward_lora,
        )
    merge_lora(teacher, reverse, spec.reverse_lora)
    for module in (text_encoder, text_encoder_2, teacher):
        if module is not None:
            module.to(device, dtype).eval().requires_grad_(False)
    # A VAE that overflows in fp16 (SDXL's: its config says force_upcast, and diffusers' SDXL
    # pipelines upcast it too) stays float32. SD1.5's VAE is fine in fp16.
    overflows = spec.traits.vae_float32_under_fp16 and getattr(vae.config, "force_upcast", False)
    upcast = overflows and dtype == torch.float16
    vae.to(device, torch.float32 if upcast else dtype).eval().requires_grad_(False)
    # cuDNN's NHWC convolutions made the UNet ~15% faster on an H100 (docs/benchmarks.md);
    # the VAE got slower, so it stays NCHW; on the CPU NHWC was slower for both.
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    teacher.to(memory_format=memory_format)
    if forward_weights is not None:  # placed like the parameters they stand in for
        forward_weights = {
            k: v.to(device, dtype).contiguous(memory_format=memory_format if v.ndim == 4 else torch.contiguous_format)
            for k, v in forward_weights.items()
        }
    if adapter_strategy == "weight-swap":
        adapters: AdapterSwitch = WeightSwapSwitch(teacher, forward_weights)
    elif adapter_strategy == "hybrid":
        adapters = HybridSwitch(teacher, forward, reverse, forward_weights)
    else:
        adapters = LowRankSwitch(teacher, forward, reverse)
    if attention != "sdpa":
        install_processors(teacher, FixedAttention(KERNELS[attention]))
    return ModelBundle(
        spec=spec,
        plan=spec.plan(),
        schedule=schedule,
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        unet=teacher,
        adapters=adapters,
        device=device,
        dtype=dtype,
        attention=attention,
        tokenizer_2=tokenizer_2,
        text_encoder_2=text_encoder_2,
    )
