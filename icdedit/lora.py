"""LoRA files in the official PEFT layout, and the cheap forward/reverse switch.

The released forward and reverse models are the same teacher UNet plus two LoRAs
(docs/numerics.md section 1). We hold one UNet: the reverse LoRA is merged into its weights (the
decode is the hot path: every edit runs it on two or more rows), and the forward model is
the same UNet plus a low-rank correction  s_f B_f A_f - s_r B_r A_r  added by forward hooks
on the targeted layers while the forward model is active. Switching is a flag: nothing is
copied, nothing drifts, and no weight is ever un-merged.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import ModelError
from .precision import at_least_float32

LORA_KEY_PREFIX = "unet.base_model.model."
LORA_TARGETS = (
    "to_q",
    "to_k",
    "to_v",
    "to_out.0",
    "proj_in",
    "proj_out",
    "ff.net.0.proj",
    "ff.net.2",
    "conv1",
    "conv2",
    "conv_shortcut",
    "downsamplers.0.conv",
    "upsamplers.0.conv",
    "time_emb_proj",
)


def is_lora_target(name: str, module: torch.nn.Module) -> bool:
    """Whether the official training targeted this layer (docs/numerics.md section 1)."""
    if not isinstance(module, (torch.nn.Linear, torch.nn.Conv2d)):
        return False
    return any(name == t or name.endswith("." + t) for t in LORA_TARGETS)


@dataclass(frozen=True)
class LoraFactors:
    """One layer's factors: delta W = scale * B @ A (conv: B is 1x1, A has the base kernel)."""

    down: torch.Tensor  # A: (r, in) or (r, in, kh, kw)
    up: torch.Tensor  # B: (out, r) or (out, r, 1, 1)
    scale: float

    def delta(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The full weight delta, in float32 (or in float64 for a float64 model)."""
        a, b = self.down.to(dtype), self.up.to(dtype)
        if a.ndim == 4:
            rank = a.shape[0]
            return self.scale * (b.reshape(b.shape[0], rank) @ a.reshape(rank, -1)).reshape(b.shape[0], *a.shape[1:])
        return self.scale * (b @ a)


def read_peft_lora(path: Path, lora_alpha: float) -> dict[str, LoraFactors]:
    """Read an official PEFT-key LoRA file into {diffusers module path: factors}."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable LoRA .safetensors file ({exc})", "re-download it") from None
    return parse_peft_lora(tensors, lora_alpha, path)


def parse_peft_lora(tensors: dict[str, torch.Tensor], lora_alpha: float, path: Path | str) -> dict[str, LoraFactors]:
    """PEFT-key tensors -> {diffusers module path: factors}.

    The scale is lora_alpha / rank with rank = lora_A.shape[0]: the files do not store alpha,
    and the official loader hard-codes 8.
    """
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        if not key.startswith(LORA_KEY_PREFIX):
            raise ModelError(
                f"{path}: unexpected key {key!r}", f"iCD LoRA keys start with {LORA_KEY_PREFIX!r} (PEFT layout)"
            )
        module, _, kind = key[len(LORA_KEY_PREFIX) :].rpartition(".lora_")
        if kind not in ("A.weight", "B.weight"):
            raise ModelError(f"{path}: unexpected key {key!r}", "expected '<module>.lora_A.weight' / '.lora_B.weight'")
        pairs.setdefault(module, {})[kind[0]] = tensor
    factors = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise ModelError(f"{path}: layer {module!r} has only lora_{next(iter(ab))}", "the file is incomplete")
        rank = ab["A"].shape[0]
        if ab["B"].shape[1] != rank:
            raise ModelError(f"{path}: layer {module!r} has A of rank {rank} but B of rank {ab['B'].shape[1]}")
        factors[module] = LoraFactors(ab["A"], ab["B"], lora_alpha / rank)
    if not factors:
        raise ModelError(f"{path}: holds no LoRA tensors", "check that this is an iCD LoRA file")
    return factors


def _layers(unet: torch.nn.Module, factors: dict[str, LoraFactors], path: Path) -> dict[str, torch.nn.Module]:
    modules = dict(unet.named_modules())
    layers = {}
    for name, f in factors.items():
        layer = modules.get(name)
        if layer is None or not isinstance(layer, (torch.nn.Linear, torch.nn.Conv2d)):
            raise ModelError(
                f"{path}: LoRA layer {name!r} is not a linear or conv layer of this UNet",
                "the LoRA belongs to another base model",
            )
        if tuple(f.delta().shape) != tuple(layer.weight.shape):
            raise ModelError(
                (
                    f"{path}: LoRA layer {name!r} has shape {tuple(f.delta().shape)}, the UNet's is "
                    f"{tuple(layer.weight.shape)}"
                ),
                "the LoRA belongs to another base model",
            )
        layers[name] = layer
    return layers


@torch.no_grad()
def merge_lora(unet: torch.nn.Module, factors: dict[str, LoraFactors], path: Path) -> None:
    """W <- W + scale * B @ A in the weights' own dtype, the delta computed in float32.

    The official loader first rounds the LoRA tensors to fp16; we keep them in float32,
    which is the more exact of the two choices the spec allows.
    """
    for name, layer in _layers(unet, factors, path).items():
        layer.weight.add_(factors[name].delta(at_least_float32(layer.weight.dtype)).to(layer.weight.dtype))


class _Correction:
    """y += B_cat(A_cat(x)) on one layer: both LoRAs' factors stacked along the rank."""

    def __init__(self, layer: torch.nn.Module, down: torch.Tensor, up: torch.Tensor):
        self.layer, self.down, self.up = layer, down, up

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layer, torch.nn.Conv2d):
            h = F.conv2d(x, self.down, None, self.layer.stride, self.layer.padding, self.layer.dilation)
            return F.conv2d(h, self.up)
        return F.linear(F.linear(x, self.down), self.up)


class AdapterSwitch:
    """One UNet, two models: 'reverse' (its merged weights) and 'forward'. `use` switches."""

    MODELS = ("forward", "reverse")

    def __init__(self) -> None:
        self.active = "reverse"

    def _activate(self, model: str) -> None:
        self.active = model

    @contextmanager
    def use(self, model: str) -> Iterator[None]:
        """Run the block with the 'forward' or 'reverse' model active, then restore."""
        if model not in self.MODELS:
            raise ValueError(f"model must be one of {self.MODELS}, not {model!r}")
        previous = self.active
        self._activate(model)
        try:
            yield
        finally:
            self._activate(previous)


class LowRankSwitch(AdapterSwitch):
    """The forward model as a low-rank correction s_f B_f A_f - s_r B_r A_r, added by forward
    hooks on the targeted layers while it is active. No second copy of any weight: the lean
    choice, used on the CPU where memory is the constraint and launch overhead is not."""

    strategy = "low-rank"

    def __init__(self, unet: torch.nn.Module, forward: dict[str, LoraFactors], reverse: dict[str, LoraFactors]):
        super().__init__()
        modules = dict(unet.named_modules())
        device, dtype = next(unet.parameters()).device, next(unet.parameters()).dtype
        wide = at_least_float32(dtype)
        self._corrections: dict[str, _Correction] = {}
        for name in sorted(set(forward) | set(reverse)):
            downs, ups = [], []
            if name in forward:  # + s_f B_f A_f
                downs.append(forward[name].down.to(wide))
                ups.append(forward[name].scale * forward[name].up.to(wide))
            if name in reverse:  # - s_r B_r A_r, undoing the merged reverse delta
                downs.append(reverse[name].down.to(wide))
                ups.append(-reverse[name].scale * reverse[name].up.to(wide))
            down = torch.cat(downs, 0).to(device, dtype)
            up = torch.cat(ups, 1).to(device, dtype)
            self._corrections[name] = _Correction(modules[name], down, up)
        self._handles = [c.layer.register_forward_hook(self._hook(c)) for c in self._corrections.values()]

    def _hook(self, correction: _Correction):
        def hook(module, args, output):
            if self.active != "forward":
                return output
            return output + correction(args[0])

        return hook


class WeightSwapSwitch(AdapterSwitch):
    """The forward model's merged weights held beside the reverse ones for the targeted layers;
    switching swaps the tensors the parameters point to (no copy, no arithmetic, no drift).
    Costs one more copy of the targeted weights and saves ~300 small kernels per evaluation:
    the fast choice on a GPU, where a 4-step UNet is launch-bound."""

    strategy = "weight-swap"

    def __init__(self, unet: torch.nn.Module, forward_weights: dict[str, torch.Tensor]):
        super().__init__()
        modules = dict(unet.named_modules())
        self._params = {name: modules[name].weight for name in forward_weights}
        self._other = dict(forward_weights)  # the weights of the model that is NOT active

    def _activate(self, model: str) -> None:
        if model != self.active:
            for name, param in self._params.items():
                param.data, self._other[name] = self._other[name], param.data
        self.active = model


def correction_cost(layer: torch.nn.Module, rank: int) -> float:
    """Work of a rank-`rank` low-rank correction relative to the layer's own, per output position."""
    out_features, in_features = layer.weight.shape[:2]
    kernel = layer.weight[0, 0].numel()  # 1 for a Linear, kh * kw for a Conv2d
    return (rank * in_features * kernel + out_features * rank) / (out_features * in_features * kernel)


SWAP_COST_THRESHOLD = 0.2


def swap_worthy_layers(
    unet: torch.nn.Module,
    forward: dict[str, LoraFactors],
    reverse: dict[str, LoraFactors],
    threshold: float = SWAP_COST_THRESHOLD,
) -> set[str]:
    """The layers whose low-rank correction (both LoRAs' ranks stacked) would cost at least
    `threshold` of their own work: with rank 64 + 64, a 320-channel convolution gains ~40%,
    a 1280-channel one ~10%."""
    modules = dict(unet.named_modules())
    names = set(forward) | set(reverse)
    rank = {n: sum(f[n].down.shape[0] for f in (forward, reverse) if n in f) for n in names}
    return {n for n in names if correction_cost(modules[n], rank[n]) >= threshold}


class HybridSwitch(AdapterSwitch):
    """Weight-swap for the layers in `forward_weights`, low-rank hooks for the others. The
    narrow layers are where the hooks cost time, the wide ones where a second copy costs memory
    (`swap_worthy_layers`; SD1.5 in fp32: ~1 GB swapped of the ~3.3 GB of targeted weights, the
    forward stage ~25% faster than with hooks everywhere). The CPU default."""

    strategy = "hybrid"

    def __init__(
        self,
        unet: torch.nn.Module,
        forward: dict[str, LoraFactors],
        reverse: dict[str, LoraFactors],
        forward_weights: dict[str, torch.Tensor],
    ):
        super().__init__()
        self.swapped = sorted(forward_weights)
        self._swap = WeightSwapSwitch(unet, forward_weights)
        self._hooks = LowRankSwitch(
            unet,
            {n: f for n, f in forward.items() if n not in forward_weights},
            {n: f for n, f in reverse.items() if n not in forward_weights},
        )

    def _activate(self, model: str) -> None:
        self._swap._activate(model)
        self._hooks._activate(model)
        self.active = model


@torch.no_grad()
def forward_merged_weights(
    unet: torch.nn.Module, forward: dict[str, LoraFactors], reverse: dict[str, LoraFactors], path: Path | str
) -> dict[str, torch.Tensor]:
    """Teacher + forward delta for every layer either LoRA touches (call before merging the
    reverse LoRA): what the forward model's weights are, computed in float32 (float64 for a
    float64 model)."""
    layers = _layers(unet, {**reverse, **forward}, Path(path))
    merged = {}
    for name, layer in layers.items():
        wide = at_least_float32(layer.weight.dtype)
        weight = layer.weight.detach().to(wide).clone()
        if name in forward:
            weight += forward[name].delta(wide)
        merged[name] = weight
    return merged
