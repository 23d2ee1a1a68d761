"""The networks behind `icdedit eval`'s model metrics, loaded from the folders `icdedit download`
leaves (eval_models.py): DINO ViT-B/8's keys (PIE-Bench's structure distance), CLIP ViT-L/14
(CLIP scores, the iCD paper's image similarity), DINOv2-base (the iCD paper's similarity) and
LPIPS over SqueezeNet (torchmetrics' layers, torchvision's weights, without torchvision).

Each takes PIL images (LPIPS: pixel tensors) and returns a float or features; what each metric
feeds them, and the conventions, are in metrics.py and docs/evaluation.md.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import ModelError

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def dino_position_encoding(position_embeddings: torch.Tensor, patch_size: int, height: int, width: int) -> torch.Tensor:
    """The position embeddings for a height x width input, resampled as DINO's official
    `VisionTransformer.interpolate_pos_encoding` does (facebookresearch/dino, vision_transformer.py):
    unchanged for a square input of the trained grid; otherwise the patch grid resampled bicubically
    by a SCALE FACTOR, (rows + 0.1) / side and (columns + 0.1) / side, 0.1 added 'to avoid floating
    point error in the interpolation'. transformers' ViT resamples to a SIZE instead, which places
    the samples differently on a non-square grid."""
    count = position_embeddings.shape[1] - 1
    rows, cols = height // patch_size, width // patch_size
    if rows * cols == count and height == width:
        return position_embeddings
    side = int(math.sqrt(count))
    grid = position_embeddings[:, 1:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    grid = torch.nn.functional.interpolate(
        grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic"
    )
    assert grid.shape[-2:] == (rows, cols), "DINO's scale factors give the patch grid"
    grid = grid.permute(0, 2, 3, 1).reshape(1, rows * cols, -1)
    return torch.cat([position_embeddings[:, :1], grid], dim=1)


class Structure:
    """PIE-Bench's structure distance: the MSE between the self-similarity (cosine) matrices of
    DINO ViT-B/8's last-block keys (all tokens, CLS included) of source and edit. As there, the
    pixels enter as 0..255 values through ImageNet's normalisation, then are resized to a short
    side of 224 (bilinear, no antialiasing; the long side at most 480). A non-square input's
    position embeddings are resampled as DINO's own model does (`dino_position_encoding`)."""

    def __init__(self, folder: Path, device: torch.device):
        from transformers import ViTModel

        self.model = load_checked(ViTModel, folder, add_pooling_layer=False).to(device).eval()
        self.device = device
        embeddings, patch_size = self.model.embeddings, self.model.config.patch_size
        # transformers' ViTEmbeddings asks this method for the resampled table; ours is DINO's
        embeddings.interpolate_pos_encoding = lambda tokens, height, width: dino_position_encoding(
            embeddings.position_embeddings, patch_size, height, width
        )
        keys = [m for n, m in self.model.named_modules() if n.endswith(("attention.k_proj", "attention.key"))]
        self._keys: list[torch.Tensor] = []
        keys[-1].register_forward_hook(lambda module, args, out: self._keys.append(out))

    def _input(self, image: Image.Image) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
        mean, std = torch.tensor(IMAGENET_MEAN)[:, None, None], torch.tensor(IMAGENET_STD)[:, None, None]
        x = (x - mean) / std
        h, w = x.shape[2:]
        short, long = min(h, w), max(h, w)
        new_short, new_long = 224, int(224 * long / short)
        if new_long > 480:
            new_short, new_long = int(480 * new_short / new_long), 480
        size = (new_short, new_long) if h <= w else (new_long, new_short)
        return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)

    @torch.no_grad()
    def self_similarity(self, image: Image.Image) -> torch.Tensor:
        self._keys.clear()
        self.model(pixel_values=self._input(image).to(self.device), interpolate_pos_encoding=True)
        keys = self._keys[-1][0].float()  # (tokens, heads x head_dim): DINO's keys, heads side by side
        norms = keys.norm(dim=1)
        return (keys @ keys.T) / torch.clamp(norms[:, None] * norms[None, :], min=1e-8)

    def __call__(self, source: Image.Image, edit: Image.Image) -> float:
        return float(torch.nn.functional.mse_loss(self.self_similarity(edit), self.self_similarity(source)))


def load_checked(model_class, folder: Path, **kwargs):
    """from_pretrained, refusing a checkpoint whose weights did not all load (transformers only
    warns and leaves them random, which would make every score meaningless)."""
    model, info = model_class.from_pretrained(folder, output_loading_info=True, **kwargs)
    missing = [k for k in info.get("missing_keys", []) if "pooler" not in k]
    if missing or info.get("mismatched_keys"):
        raise ModelError(
            f"evaluation model in {folder} did not load: {len(missing)} weight(s) missing, e.g. {missing[:3]}",
            "delete the folder and run `icdedit download` for it again",
        )
    return model


def _features(output) -> torch.Tensor:
    """transformers 5 returns an output whose pooler_output holds the projected features."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class Clip:
    """CLIP ViT-L/14 through transformers: the text score as torchmetrics' CLIPScore computes it,
    100 x max(cos, 0) (the prompt truncated to 77 tokens); the image-image cosine as the iCD code."""

    def __init__(self, folder: Path, device: torch.device):
        from transformers import CLIPModel, CLIPProcessor

        self.model = load_checked(CLIPModel, folder).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(folder)
        self.device = device

    @torch.no_grad()
    def image(self, image: Image.Image) -> torch.Tensor:
        inputs = self.processor(images=image, return_tensors="pt")
        features = _features(self.model.get_image_features(pixel_values=inputs["pixel_values"].to(self.device)))
        return torch.nn.functional.normalize(features.float(), dim=-1)[0]

    @torch.no_grad()
    def text(self, prompt: str) -> torch.Tensor:
        inputs = self.processor.tokenizer([prompt], padding=True, truncation=True, max_length=77, return_tensors="pt")
        features = _features(self.model.get_text_features(**{k: v.to(self.device) for k, v in inputs.items()}))
        return torch.nn.functional.normalize(features.float(), dim=-1)[0]

    def score(self, image: Image.Image, prompt: str) -> float:
        return float(100 * torch.clamp(self.image(image) @ self.text(prompt), min=0))


class Dinov2:
    """DINOv2-base as the iCD code uses it: the pooled (final-layer-normed CLS) features of source
    and edit, their cosine."""

    def __init__(self, folder: Path, device: torch.device):
        from transformers import AutoImageProcessor, AutoModel

        self.model = load_checked(AutoModel, folder).to(device).eval()
        self.processor = AutoImageProcessor.from_pretrained(folder)
        self.device = device

    @torch.no_grad()
    def __call__(self, source: Image.Image, edit: Image.Image) -> float:
        inputs = self.processor(images=[source, edit], return_tensors="pt")
        pooled = self.model(pixel_values=inputs["pixel_values"].to(self.device)).pooler_output.float()
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        return float(pooled[0] @ pooled[1])


class _Fire(torch.nn.Module):
    """SqueezeNet's Fire module, with torchvision's parameter names."""

    def __init__(self, inplanes: int, squeeze: int, expand: int):
        super().__init__()
        self.squeeze = torch.nn.Conv2d(inplanes, squeeze, 1)
        self.expand1x1 = torch.nn.Conv2d(squeeze, expand, 1)
        self.expand3x3 = torch.nn.Conv2d(squeeze, expand, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.expand1x1(x)), torch.relu(self.expand3x3(x))], 1)


def squeezenet_features() -> torch.nn.Sequential:
    """torchvision's squeezenet1_1().features, layer for layer (its checkpoint's `features.*` keys
    load into it), so that LPIPS needs no torchvision."""
    pool = lambda: torch.nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 64, 3, stride=2),
        torch.nn.ReLU(),
        pool(),
        _Fire(64, 16, 64),
        _Fire(128, 16, 64),
        pool(),
        _Fire(128, 32, 128),
        _Fire(256, 32, 128),
        pool(),
        _Fire(256, 48, 192),
        _Fire(384, 48, 192),
        _Fire(384, 64, 256),
        _Fire(512, 64, 256),
    )


LPIPS_TAPS = (2, 5, 8, 10, 11, 12, 13)  # LPIPS (squeeze) reads the features after these layers
LPIPS_SHIFT, LPIPS_SCALE = (-0.030, -0.088, -0.188), (0.458, 0.448, 0.450)


class Lpips:
    """LPIPS v0.1 with the SqueezeNet backbone, as torchmetrics' LearnedPerceptualImagePatchSimilarity
    (net_type='squeeze') computes it: inputs in [-1, 1] shifted and scaled, the seven taps' features
    unit-normalised over channels (x / sqrt(1e-8 + sum x^2)), squared differences weighted by
    LPIPS's linear layers (shipped inside torchmetrics), averaged over space, summed over taps.
    The backbone's weights are torchvision's checkpoint, read with weights_only=True."""

    def __init__(self, folder: Path, device: torch.device):
        from importlib.resources import files

        checkpoint = next(folder.glob("checkpoints/squeezenet1_1-*.pth"))
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        self.features = squeezenet_features()
        self.features.load_state_dict({k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")})
        heads = files("torchmetrics.functional.image") / "lpips_models" / "squeeze.pth"
        with heads.open("rb") as handle:
            linear = torch.load(handle, map_location="cpu", weights_only=True)
        self.heads = [linear[f"lin{i}.model.1.weight"] for i in range(len(LPIPS_TAPS))]
        self.features.to(device).eval().requires_grad_(False)
        self.heads = [h.to(device) for h in self.heads]
        self.device = device

    def taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        shift, scale = torch.tensor(LPIPS_SHIFT)[None, :, None, None], torch.tensor(LPIPS_SCALE)[None, :, None, None]
        x = ((x - shift) / scale).to(self.device)
        out, start = [], 0
        for end in LPIPS_TAPS:
            x = self.features[start:end](x)
            out.append(x)
            start = end
        return out

    @torch.no_grad()
    def __call__(self, edit: torch.Tensor, source: torch.Tensor) -> float:
        total = 0.0
        for a, b, head in zip(self.taps(edit), self.taps(source), self.heads):
            a = a / torch.sqrt(1e-8 + (a**2).sum(1, keepdim=True))
            b = b / torch.sqrt(1e-8 + (b**2).sum(1, keepdim=True))
            total += torch.nn.functional.conv2d((a - b) ** 2, head).mean()
        return float(total)


NETWORKS = {"dino-vitb8": Structure, "clip-vit-large-patch14": Clip, "dinov2-base": Dinov2, "lpips-squeeze": Lpips}
"""The class that runs each evaluation model (eval_models.EVAL_MODELS's names), built from its folder."""
