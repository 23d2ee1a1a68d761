"""`icdedit eval`: PIE-Bench's editing metrics, and the iCD paper's, for edits on disk.

The conventions are those of PnPInversion's evaluation (`evaluation/evaluate.py`,
`evaluation/matrics_calculator.py`), so that the numbers compare with published tables:
docs/evaluation.md lists each one and where icdedit departs from it. The pixel metrics come
from torchmetrics, as there; the network metrics run the released models through
transformers (CLIP, DINO, DINOv2); LPIPS is torchmetrics' (its layers) over SqueezeNet's
torchvision weights, without torchvision.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .errors import IcdEditError, InputError, ModelError, UsageError
from .eval_models import EVAL_MODELS, model_for
from .images import load_image

METRICS = ("structure", "psnr", "lpips", "mse", "ssim", "clip_whole", "clip_edited", "dinov2", "clip_image")
REGION_METRICS = ("psnr", "lpips", "mse", "ssim")  # the unedited region with a mask; else the whole image
PIE_SIZE = (512, 512)  # PIE-Bench's masks are run-length encoded over a 512 x 512 grid
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class EvalInputError(IcdEditError):
    """An evaluation input that cannot be used as a whole (exit code 2; nothing was scored)."""

    exit_code = 2


@dataclass(frozen=True)
class EvalItem:
    source: Path  # the photo that was edited
    edit: Path  # the edited image
    target: str  # the target prompt
    mask: np.ndarray | None = None  # (H, W), 1 = the edited region


# -- inputs ----------------------------------------------------------------------------------------
def decode_rle(encoded: Sequence[int], shape: tuple[int, int] = PIE_SIZE) -> np.ndarray:
    """PIE-Bench's mask: (start, length) pairs of ones over the row-major flattened grid, runs
    clipped at its end; then, as PnPInversion's `mask_decode` does, the one-pixel border is set
    to 1 ('to avoid annotation errors in boundary'): it is never part of the unedited region."""
    if len(encoded) % 2 or not all(isinstance(v, int) and v >= 0 for v in encoded):
        raise ValueError("the mask is not a list of (start, length) pairs of whole numbers")
    total = shape[0] * shape[1]
    flat = np.zeros(total, dtype=np.float32)
    for start, length in zip(encoded[0::2], encoded[1::2]):
        flat[start : start + max(0, min(length, total - start))] = 1
    mask = flat.reshape(shape)
    mask[0, :] = mask[-1, :] = mask[:, 0] = mask[:, -1] = 1
    return mask


def items_from_batch(folder: Path) -> list[tuple[int, Path, Path, str, dict]]:
    """(item number, photo, edit, target prompt, settings) of every done item of a `batch` output
    folder, the last line of each item (a killed run may have left earlier ones). Paths recorded
    relative to where `batch` ran are found from here, or from beside the folder."""
    if not folder.is_dir():
        raise EvalInputError(f"{folder} is not a folder", "give a `batch` output folder or a pairs .csv")
    reports = sorted(folder.glob("results*.jsonl"))
    if not reports:
        raise EvalInputError(f"{folder} has no results.jsonl", "is it a `batch` output folder? (or give a pairs .csv)")
    found: dict[tuple[str, int], tuple] = {}
    for report in reports:
        for line in report.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                number = int(record["item"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if record.get("status") != "done" or not {"image", "output", "tgt"} <= record.keys():
                found.pop((report.name, number), None)
                continue
            settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
            base = _base(Path(record["output"]), folder)
            paths = [Path(record[k]) if base is None else base / record[k] for k in ("image", "output")]
            found[(report.name, number)] = (number, *paths, str(record["tgt"]), settings)
    if not found:
        raise EvalInputError(f"{folder}: no done items in {', '.join(r.name for r in reports)}", "run the batch first")
    return [found[k] for k in sorted(found, key=lambda k: (k[1], k[0]))]


def _base(output: Path, folder: Path) -> Path | None:
    """Where `batch` ran, for its relative paths: here, or the folder's nearest ancestor under which
    the recorded output exists (`--out runs/a` run from X records runs/a/...: X). None: as recorded."""
    if output.is_absolute() or output.exists():
        return None
    for ancestor in folder.resolve().parents:
        if (ancestor / output).exists():
            return ancestor
    return None


PAIR_COLUMNS = {"source": ("source", "image", "photo"), "edit": ("edit", "output"), "target": ("tgt", "target")}


def items_from_pairs(path: Path) -> list[tuple[Path, Path, str, Path | None]]:
    """Explicit pairs (edits made by any tool): a CSV/TSV/JSONL/YAML with source, edit and tgt
    columns and optionally mask (an image, white = edited); paths relative to the file."""
    from .manifests import ManifestError, read_manifest

    try:
        rows = read_manifest(path)
    except ManifestError as exc:
        raise EvalInputError("; ".join(exc.problems), "a CSV with source, edit and tgt columns") from None
    columns = {k for row in rows for k in row}
    chosen = {}
    for name, aliases in PAIR_COLUMNS.items():
        chosen[name] = next((a for a in aliases if a in columns), None)
        if chosen[name] is None:
            raise EvalInputError(f"{path}: no {name} column (any of {', '.join(aliases)})", "add it and run again")
    root = path.parent
    return [
        (
            root / str(row.get(chosen["source"]) or ""),
            root / str(row.get(chosen["edit"]) or ""),
            str(row.get(chosen["target"]) or ""),
            root / str(row["mask"]) if row.get("mask") else None,
        )
        for row in rows
    ]


class PieBenchMasks:
    """PIE-Bench's `mapping_file.json`: an item's entry is the key equal to its photo's file
    stem (or, failing that, the entry whose `image_path` has that stem)."""

    def __init__(self, path: Path):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise EvalInputError(f"mapping file not found: {path}", "give PIE-Bench's mapping_file.json") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EvalInputError(
                f"{path}: not a readable JSON file ({exc})", "give PIE-Bench's mapping_file.json"
            ) from None
        if not isinstance(data, dict):
            raise EvalInputError(f"{path}: expected PIE-Bench's mapping (an object keyed by image id)")
        self.path = path
        self.entries = data
        self.by_image = {Path(str(e.get("image_path", ""))).stem: e for e in data.values() if isinstance(e, dict)}

    def mask_for(self, photo: Path) -> np.ndarray:
        entry = self.entries.get(photo.stem) or self.by_image.get(photo.stem)
        if not isinstance(entry, dict) or "mask" not in entry:
            raise InputError(f"{self.path.name} has no entry with a mask for {photo.stem}")
        try:
            return decode_rle(entry["mask"])
        except ValueError as exc:
            raise InputError(f"{self.path.name}, {photo.stem}: {exc}") from None


def mask_from_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A user's mask image: white (over half intensity) = edited, resized to the photo's size."""
    mask = load_image(path).convert("L").resize(size, Image.Resampling.NEAREST)
    return (np.asarray(mask) > 127).astype(np.float32)


# -- metrics ---------------------------------------------------------------------------------------
def _pixels(image: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) float32 in [0, 1], as PnPInversion's `np.array(img) / 255`."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


def _masked(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return x * keep[None, None]


def region_scores(source: Image.Image, edit: Image.Image, mask: np.ndarray | None, names: Sequence[str], lpips=None):
    """PSNR, MSE, SSIM, LPIPS of the unedited region as PIE-Bench computes them: both images
    multiplied by (1 - mask), then the whole-image metric over all pixels (zeros included).
    NaN when the unedited region is empty. Without a mask: the whole images."""
    from torchmetrics.functional import mean_squared_error
    from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

    keep = torch.ones(source.size[::-1]) if mask is None else 1 - torch.from_numpy(mask)
    if keep.sum() == 0:
        return {name: math.nan for name in names}
    s, e = _masked(_pixels(source), keep), _masked(_pixels(edit), keep)
    scores = {}
    for name in names:
        if name == "psnr":
            scores[name] = peak_signal_noise_ratio(e, s, data_range=1.0)
        elif name == "mse":
            scores[name] = mean_squared_error(e.contiguous().view(-1), s.contiguous().view(-1))
        elif name == "ssim":
            scores[name] = structural_similarity_index_measure(e, s, data_range=1.0)
        elif name == "lpips":
            scores[name] = lpips(e * 2 - 1, s * 2 - 1)
    return {name: float(value) for name, value in scores.items()}


class Structure:
    """PIE-Bench's structure distance: the MSE between the self-similarity (cosine) matrices of
    DINO ViT-B/8's last-block keys (all tokens, CLS included) of source and edit. As there, the
    pixels enter as 0..255 values through ImageNet's normalisation, then are resized to a short
    side of 224 (bilinear, no antialiasing; the long side at most 480)."""

    def __init__(self, folder: Path, device: torch.device):
        from transformers import ViTModel

        self.model = load_checked(ViTModel, folder, add_pooling_layer=False).to(device).eval()
        self.device = device
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


# -- scoring ---------------------------------------------------------------------------------------
def check_metrics(names: Sequence[str] | None) -> list[str]:
    """The metrics asked for, in METRICS order; None: every metric whose model is on disk."""
    if names is None:
        return [m for m in METRICS if model_for(m) is None or model_for(m).present]
    unknown = [n for n in names if n not in METRICS]
    if unknown:
        raise UsageError(f"unknown metric(s) {', '.join(map(repr, unknown))}", f"choose from {', '.join(METRICS)}")
    for name in names:
        model = model_for(name)
        if model is not None:
            model.require()
    return [m for m in METRICS if m in names]


@dataclass
class Scorer:
    """Every metric asked for, each model loaded once, on first need."""

    metrics: list[str]
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    _loaded: dict = field(default_factory=dict)

    def _model(self, name: str, build: Callable):
        if name not in self._loaded:
            self._loaded[name] = build(EVAL_MODELS[name].require(), self.device)
        return self._loaded[name]

    def score(self, source: Image.Image, edit: Image.Image, target: str, mask: np.ndarray | None) -> dict[str, float]:
        """One number per metric; region metrics are named `<metric>_whole` without a mask, and
        `clip_edited` needs one."""
        wanted = set(self.metrics)
        scores: dict[str, float] = {}
        region = [m for m in REGION_METRICS if m in wanted]
        if region:
            lpips = self._model("lpips-squeeze", Lpips) if "lpips" in wanted else None
            for name, value in region_scores(source, edit, mask, region, lpips).items():
                scores[name if mask is not None else f"{name}_whole"] = value
        if "structure" in wanted:
            scores["structure"] = self._model("dino-vitb8", Structure)(source, edit)
        if wanted & {"clip_whole", "clip_edited", "clip_image"}:
            clip = self._model("clip-vit-large-patch14", Clip)
            if "clip_whole" in wanted:
                scores["clip_whole"] = clip.score(edit, target)
            if "clip_edited" in wanted and mask is not None:
                edited_part = Image.fromarray(np.uint8(np.asarray(edit) * mask[:, :, None]))
                scores["clip_edited"] = clip.score(edited_part, target)
            if "clip_image" in wanted:
                scores["clip_image"] = float(clip.image(source) @ clip.image(edit))
        if "dinov2" in wanted:
            scores["dinov2"] = self._model("dinov2-base", Dinov2)(source, edit)
        return scores


def load_pair(item: EvalItem) -> tuple[Image.Image, Image.Image]:
    """The photo and its edit, both RGB and of one size (the edit is never resized: a size
    mismatch is the item's problem), and the mask of that size."""
    source, edit = load_image(item.source), load_image(item.edit)
    if source.size != edit.size:
        raise InputError(
            f"{item.edit.name} is {edit.width}x{edit.height} but its photo {item.source.name} is "
            f"{source.width}x{source.height}",
            "edits keep the photo's size; was the photo replaced?",
        )
    if item.mask is not None and item.mask.shape != (source.height, source.width):
        h, w = item.mask.shape
        raise InputError(
            f"the mask is {w}x{h} but {item.source.name} is {source.width}x{source.height}",
            "PIE-Bench's masks are for its 512 x 512 photos",
        )
    return source, edit


def summarise(rows: list[dict], names: Sequence[str]) -> dict[str, dict]:
    """Per metric: the mean over the items with a finite value, and how many those are."""
    summary = {}
    for name in names:
        values = [row[name] for row in rows if isinstance(row.get(name), float) and math.isfinite(row[name])]
        if any(name in row for row in rows):
            summary[name] = {"mean": sum(values) / len(values) if values else math.nan, "count": len(values)}
    return summary


# -- running ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalRequest:
    inputs: Path  # a `batch` output folder, or a pairs file
    pie_bench: Path | None = None  # PIE-Bench's mapping_file.json
    metrics: tuple[str, ...] | None = None  # None: every metric whose model is on disk
    output: Path | None = None  # metrics.csv; default: in the folder, or beside the pairs file
    device: str = "auto"
    overwrite: bool = False


def metric_columns(rows: list[dict]) -> list[str]:
    """The metric columns present, in METRICS order (a region metric, then its _whole form)."""
    order = [name for m in METRICS for name in ((m, f"{m}_whole") if m in REGION_METRICS else (m,))]
    return [name for name in order if any(name in row for row in rows)]


def _raw_items(inputs: Path) -> list[tuple[int, Path, Path, str, Path | None, str | None]]:
    """(item number, photo, edit, target, mask image or None, settings label or None) per item. A batch made
    with --grid (items whose settings differ) labels each item with the settings that vary."""
    if inputs.is_dir():
        found = items_from_batch(inputs)
        varying = sorted({k for *_, s in found for k in s if len({json.dumps(x.get(k)) for *_, x in found}) > 1})
        label = (lambda s: ", ".join(f"{k}={s.get(k)}" for k in varying)) if varying else (lambda s: None)
        return [(n, source, edit, target, None, label(settings)) for n, source, edit, target, settings in found]
    from .manifests import MANIFEST_SUFFIXES

    if inputs.suffix.lower() not in MANIFEST_SUFFIXES:
        raise EvalInputError(
            f"{inputs} is neither a folder nor a pairs file", "give a `batch` output folder or a .csv of pairs"
        )
    if not inputs.is_file():
        raise EvalInputError(f"pairs file not found: {inputs}")
    return [(n, *pair, None) for n, pair in enumerate(items_from_pairs(inputs), start=1)]


def run_eval(request: EvalRequest, reporter=None) -> dict:
    from .files import check_output, write_atomically
    from .loader import resolve_device
    from .reporting import Reporter

    reporter = reporter or Reporter()
    names = check_metrics(request.metrics)
    masks = PieBenchMasks(request.pie_bench) if request.pie_bench is not None else None
    raw = _raw_items(request.inputs)
    default = (
        request.inputs / "metrics.csv"
        if request.inputs.is_dir()
        else request.inputs.with_name(f"{request.inputs.stem}-metrics.csv")
    )
    output = request.output or default
    if output.suffix.lower() != ".csv":
        raise UsageError(f"-o {output} must end in .csv", "e.g. -o metrics.csv")
    check_output(output, request.overwrite)
    if masks is None and "clip_edited" in names and all(mask is None for *_, mask, _ in raw):
        reporter.note("note: clip_edited needs masks (--pie-bench, or a mask column); region metrics are _whole")
    scorer = Scorer(names, resolve_device(request.device))
    step = reporter.stage("scoring", len(raw))
    rows = []
    for number, source, edit, target, mask_path, group in raw:
        row: dict = {"item": number, "source": str(source), "edit": str(edit), "target": target}
        if group is not None:
            row["settings"] = group
        try:
            mask = masks.mask_for(source) if masks is not None else None
            pair = EvalItem(source, edit, target, mask)
            photo, edited = load_pair(pair)
            if mask_path is not None:
                mask = mask_from_image(mask_path, photo.size)
            row.update(scorer.score(photo, edited, target, mask))
        except IcdEditError as exc:
            row["error"] = str(exc)
            reporter.note(f"item {number} ({source.name}) not scored: {exc}")
        rows.append(row)
        step()
    columns = metric_columns(rows)
    grouped = any("settings" in row for row in rows)
    header = ["item", "source", "edit", "target", *(["settings"] if grouped else []), *columns]
    header += ["error"] if any("error" in r for r in rows) else []
    write_atomically(output, lambda tmp: _write_csv(tmp, header, rows))
    report = {
        "command": "eval",
        "csv": str(output),
        "metrics": columns,
        "summary": _json_summary(summarise(rows, columns)),
        "items": [{k: _json_number(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows],
        "failed": [row["item"] for row in rows if "error" in row],
    }
    if grouped:  # a grid: the summary of each cell's settings, in the order first met
        labels = list(dict.fromkeys(row["settings"] for row in rows))
        report["by_settings"] = {
            label: _json_summary(summarise([r for r in rows if r["settings"] == label], columns)) for label in labels
        }
    return report


def _json_summary(summary: dict) -> dict:
    return {k: {**v, "mean": _json_number(v["mean"])} for k, v in summary.items()}


def _json_number(value: float) -> float | None:
    """JSON has no NaN or infinity: those are null (the CSV keeps nan / inf)."""
    return value if math.isfinite(value) else None


def _write_csv(path: Path, header: list[str], rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})
