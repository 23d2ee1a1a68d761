"""`icdedit eval` on images of any size (issue #29), against references written from the official
code and sharing none with icdedit:

- structure: PnPInversion's `LossG.calculate_global_ssim_loss` (evaluation/matrics_calculator.py:
  torchvision `Resize(224, max_size=480)` then ImageNet's normalisation, DINO's last-block keys,
  cosine self-similarity, MSE) over DINO's own `VisionTransformer` token preparation
  (facebookresearch/dino, vision_transformer.py: `interpolate_pos_encoding`, resampling by a
  scale factor after adding 0.1 to the grid);
- dinov2 and clip_image: the iCD code's `calc_dinov2_images_images` and
  `calc_clip_score_images_images` (utils/metrics.py) on images read by its `load_512`.

The networks are tiny random-weight models of the real architectures (tests/tiny_eval.py); each
tolerance is SAFETY float32 errors of the reference, measured against its float64 run
(tests/tolerance.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from icdedit.eval_networks import Structure
from icdedit.metrics import Scorer

from .conftest import make_photo
from .tiny_eval import build_tiny_eval_models
from .tolerance import Float32Error, assert_close

SIZES = [(256, 192), (512, 128), (192, 256)]  # (width, height): non-square, both orientations


@pytest.fixture(scope="module")
def eval_home(tmp_path_factory, tiny_spec) -> Path:
    return build_tiny_eval_models(tmp_path_factory.mktemp("eval-home"), Path(tiny_spec.base) / "tokenizer")


@pytest.fixture
def with_models(monkeypatch, eval_home) -> Path:
    monkeypatch.setenv("ICDEDIT_HOME", str(eval_home))
    return eval_home


def _pair(width: int, height: int) -> tuple[Image.Image, Image.Image]:
    return make_photo(width, height, seed=1), make_photo(width, height, seed=2)


# -- structure: PnPInversion over DINO's ViT -----------------------------------------------------------
def dino_interpolate_pos_encoding(pos_embed: torch.Tensor, patch_size: int, w: int, h: int) -> torch.Tensor:
    """DINO's `interpolate_pos_encoding(x, w, h)`, step for step; w, h are `x.shape[2:]` there
    (rows, columns)."""
    npatch = (w // patch_size) * (h // patch_size)
    N = pos_embed.shape[1] - 1
    if npatch == N and w == h:
        return pos_embed
    class_pos_embed = pos_embed[:, 0]
    patch_pos_embed = pos_embed[:, 1:]
    dim = pos_embed.shape[-1]
    w0, h0 = w // patch_size + 0.1, h // patch_size + 0.1
    patch_pos_embed = F.interpolate(
        patch_pos_embed.reshape(1, int(math.sqrt(N)), int(math.sqrt(N)), dim).permute(0, 3, 1, 2),
        scale_factor=(w0 / math.sqrt(N), h0 / math.sqrt(N)),
        mode="bicubic",
    )
    patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)
    return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1)


def torchvision_resize(x: torch.Tensor, size: int = 224, max_size: int = 480) -> torch.Tensor:
    """torchvision's `Resize(size, max_size)` on a tensor as versions before 0.17 do it: the
    short side to `size` (the long one scaled and truncated, then capped at max_size), bilinear,
    no antialiasing."""
    h, w = x.shape[-2:]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    if new_long > max_size:
        new_short, new_long = int(max_size * new_short / new_long), max_size
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)


def reference_keys_self_sim(vit, image: Image.Image, dtype: torch.dtype) -> torch.Tensor:
    """PnPInversion's `get_keys_self_sim_from_input(global_transform(img), layer_num=11)`: the keys
    of the last block's qkv (heads side by side), their cosine self-similarity (eps 1e-8)."""
    x = torch.from_numpy(np.array(image).astype(np.float32)).permute(2, 0, 1)[None].to(dtype)
    x = torchvision_resize(x)
    mean = torch.tensor((0.485, 0.456, 0.406), dtype=dtype)[:, None, None]
    std = torch.tensor((0.229, 0.224, 0.225), dtype=dtype)[:, None, None]
    x = (x - mean) / std
    # DINO's prepare_tokens: patch embedding, CLS in front, position embeddings for this size
    embeddings = vit.embeddings
    tokens = embeddings.patch_embeddings.projection(x).flatten(2).transpose(1, 2)
    tokens = torch.cat((embeddings.cls_token.expand(1, -1, -1), tokens), dim=1)
    w, h = x.shape[2:]
    tokens = tokens + dino_interpolate_pos_encoding(embeddings.position_embeddings, vit.config.patch_size, w, h)
    layers = list(vit.layers if hasattr(vit, "layers") else vit.encoder.layer)
    for layer in layers[:-1]:
        out = layer(tokens)
        tokens = out[0] if isinstance(out, tuple) else out
    last = layers[-1]
    key = last.attention.k_proj if hasattr(last.attention, "k_proj") else last.attention.attention.key
    keys = key(last.layernorm_before(tokens))[0]  # (tokens, heads x head_dim)
    norm = keys.norm(dim=1, keepdim=True)
    return (keys @ keys.T) / torch.clamp(norm @ norm.T, min=1e-8)


def reference_structure(vit, source: Image.Image, edit: Image.Image, dtype: torch.dtype) -> torch.Tensor:
    with torch.no_grad():
        return F.mse_loss(reference_keys_self_sim(vit, edit, dtype), reference_keys_self_sim(vit, source, dtype))


@pytest.mark.parametrize("size", SIZES)
def test_structure_on_non_square_images_is_pie_benchs_over_dinos_vit(with_models, size):
    structure = Structure(with_models / "eval" / "dino-vitb8", torch.device("cpu"))
    source, edit = _pair(*size)
    vit = structure.model
    with torch.no_grad():
        expected_sim = reference_keys_self_sim(vit, source, torch.float32)
        expected = reference_structure(vit, source, edit, torch.float32)
        vit.double()
        exact_sim = reference_keys_self_sim(vit, source, torch.float64)
        exact = reference_structure(vit, source, edit, torch.float64)
        vit.float()
    sim_tolerance = Float32Error.measure(expected_sim, exact_sim).tolerance(exact_sim)
    assert_close(structure.self_similarity(source), exact_sim, sim_tolerance, "self-similarity")
    tolerance = Float32Error.measure(expected, exact).tolerance(exact)
    got = structure(source, edit)
    assert abs(got - float(exact)) <= tolerance, f"{got} vs {float(exact)}: tolerance {tolerance:.3g}"
    # the test has teeth: resampled to a size (transformers' way), the token similarities move
    del vit.embeddings.interpolate_pos_encoding  # the class's own method again
    moved = float((structure.self_similarity(source).double() - exact_sim).abs().max())
    assert moved > sim_tolerance, f"transformers' resampling moved the similarities by only {moved:.3g}"


def test_square_photos_keep_the_trained_position_embeddings(with_models):
    """PIE-Bench's 512 x 512 photos enter at 224 x 224, DINO's own grid: both ways take the
    embeddings as they are, so the self-similarity is bit for bit the unpatched model's (the same
    kernels on the same inputs)."""
    structure = Structure(with_models / "eval" / "dino-vitb8", torch.device("cpu"))
    photo = make_photo(512, 512, seed=3)
    ours = structure.self_similarity(photo)
    del structure.model.embeddings.interpolate_pos_encoding
    assert torch.equal(ours, structure.self_similarity(photo))


# -- dinov2 and clip_image: the iCD code over load_512 -------------------------------------------------
def load_512(image: Image.Image) -> Image.Image:
    """The iCD code's `load_512` then `to_pil_images` (one image): RGB, resized to 512 x 512 with
    Pillow's default filter."""
    array = np.array(image.convert("RGB"))[:, :, :3]
    return Image.fromarray(np.array(Image.fromarray(array).resize((512, 512))).astype(np.uint8))


def _image_features(model, pixel_values: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "dinov2":
        return model(pixel_values=pixel_values).pooler_output
    out = model.get_image_features(pixel_values)
    return out if isinstance(out, torch.Tensor) else out.pooler_output  # transformers 5: an output object


def reference_similarity(folder: Path, kind: str, source, edit, dtype: torch.dtype, resize: bool = True):
    """`calc_dinov2_images_images` / `calc_clip_score_images_images` for one pair: each image
    through the processor, pooled (DINOv2) or projected image (CLIP) features, unit-normalised,
    their dot product."""
    from transformers import AutoImageProcessor, AutoModel, AutoProcessor

    processor = (AutoImageProcessor if kind == "dinov2" else AutoProcessor).from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval().to(dtype)
    images = [load_512(source), load_512(edit)] if resize else [source, edit]
    embeddings = []
    with torch.no_grad():
        for image in images:
            pixel_values = processor(images=[image], return_tensors="pt")["pixel_values"].to(dtype)
            emb = _image_features(model, pixel_values, kind)
            embeddings.append(emb / torch.norm(emb, dim=-1, keepdim=True))
    return (embeddings[1] * embeddings[0]).sum(-1)[0]


class Recording:
    """A processor that remembers the images it was given (what the network sees)."""

    def __init__(self, processor, seen: list):
        self.processor, self.seen = processor, seen

    def __call__(self, images, **kwargs):
        self.seen.extend(np.asarray(image) for image in (images if isinstance(images, list) else [images]))
        return self.processor(images=images, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.processor, name)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("metric", "folder"), [("dinov2", "dinov2-base"), ("clip_image", "clip-vit-large-patch14")])
def test_icd_similarities_resize_to_512_as_the_icd_code(with_models, size, metric, folder):
    source, edit = _pair(*size)
    path = with_models / "eval" / folder
    kind = "dinov2" if metric == "dinov2" else "clip"
    for icd_size, images in (((512, 512), [load_512(source), load_512(edit)]), (None, [source, edit])):
        resize = icd_size is not None
        expected = reference_similarity(path, kind, source, edit, torch.float32, resize)
        exact = reference_similarity(path, kind, source, edit, torch.float64, resize)
        tolerance = Float32Error.measure(expected, exact).tolerance(exact)
        scorer, seen = Scorer([metric], icd_size=icd_size), []
        scorer._model(folder).processor = Recording(scorer._model(folder).processor, seen)
        got = scorer.score(source, edit, "", None)[metric]
        assert abs(got - float(exact)) <= tolerance, f"{got} vs {float(exact)}: tolerance {tolerance:.3g}"
        # the network sees exactly the images the iCD code gives it (Pillow's resize on both sides)
        assert len(seen) == 2 and all(np.array_equal(a, np.asarray(b)) for a, b in zip(seen, images))
    assert load_512(source).size == (512, 512) != source.size  # the two runs saw other images
