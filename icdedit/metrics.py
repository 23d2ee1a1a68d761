"""The metrics, in one table: what each is, which way is better, what it needs, how it is computed.

`icdedit eval`, `edit --grid --score/--pick` and `reconstruct` all score through this table, and
the CLI's help lists come from it. The conventions are PnPInversion's (PIE-Bench) and the
official iCD code's; docs/evaluation.md lists each one, and the library versions whose behaviour
each metric follows. The pixel metrics come from torchmetrics; the network metrics run the models
of eval_networks.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .errors import UsageError

if TYPE_CHECKING:  # torch is imported where pixels become tensors: the CLI's help reads this table without it
    import torch

ICD_SIZE = (512, 512)  # the iCD code's `load_512`: every image resized to 512 x 512 before DINOv2 and CLIP


@dataclass(frozen=True)
class Pair:
    """What a metric reads: the photo, its edit (RGB, one size), the target prompt and the edited
    region (H, W; 1 = edited) if known. `icd_size`: the size the iCD paper's similarity metrics
    resize both images to first (None: as they are)."""

    source: Image.Image | np.ndarray
    edit: Image.Image | np.ndarray
    target: str = ""
    mask: np.ndarray | None = None
    icd_size: tuple[int, int] | None = ICD_SIZE

    @cached_property
    def region(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(source, edit) as PIE-Bench's region metrics see them: (1, 3, H, W) in [0, 1] (as
        PnPInversion's `np.array(img) / 255`) times 1 - mask. None: the unedited region is empty."""
        import torch

        s, e = _pixels(self.source), _pixels(self.edit)
        keep = torch.ones(s.shape[-2:]) if self.mask is None else 1 - torch.from_numpy(self.mask)
        if keep.sum() == 0:
            return None
        return s * keep, e * keep

    def resized(self) -> tuple[Image.Image, Image.Image]:
        """Both images as the iCD code reads them: `load_512` resizes with Pillow's default filter
        (bicubic for RGB), a no-op at 512 x 512."""
        images = [Image.fromarray(np.asarray(image)) for image in (self.source, self.edit)]
        return tuple(image if self.icd_size is None else image.resize(self.icd_size) for image in images)


def _pixels(image: Image.Image | np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255).permute(2, 0, 1)[None]


# -- each metric's computation (a Pair and its model, if any) --------------------------------------
def _psnr(pair: Pair, model=None) -> float:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    source, edit = pair.region
    return float(peak_signal_noise_ratio(edit, source, data_range=1.0))


def _mse(pair: Pair, model=None) -> float:
    from torchmetrics.functional import mean_squared_error

    source, edit = pair.region
    return float(mean_squared_error(edit.contiguous().view(-1), source.contiguous().view(-1)))


def _ssim(pair: Pair, model=None) -> float:
    from torchmetrics.functional.image import structural_similarity_index_measure

    source, edit = pair.region
    return float(structural_similarity_index_measure(edit, source, data_range=1.0))


def _lpips(pair: Pair, lpips) -> float:
    source, edit = pair.region
    return float(lpips(edit * 2 - 1, source * 2 - 1))


def _structure(pair: Pair, dino) -> float:
    return dino(pair.source, pair.edit)


def _clip_whole(pair: Pair, clip) -> float:
    return clip.score(pair.edit, pair.target)


def _clip_edited(pair: Pair, clip) -> float:
    edited_part = Image.fromarray(np.uint8(np.asarray(pair.edit) * pair.mask[:, :, None]))  # black elsewhere
    return clip.score(edited_part, pair.target)


def _clip_image(pair: Pair, clip) -> float:
    source, edit = pair.resized()
    return float(clip.image(source) @ clip.image(edit))


def _dinov2(pair: Pair, dinov2) -> float:
    return dinov2(*pair.resized())


@dataclass(frozen=True)
class Metric:
    name: str
    origin: str  # whose metric: "PIE-Bench" or "the iCD paper"
    lower_is_better: bool  # a distance; else a similarity or score, higher is better
    compute: Callable[[Pair, Any], float]  # (pair, the loaded model or None) -> the value
    model: str | None = None  # the evaluation model it runs (eval_models.EVAL_MODELS's name)
    region: bool = False  # on the unedited region with a mask; without, the whole image as `<name>_whole`
    needs_mask: bool = False  # no value without a mask

    @property
    def columns(self) -> tuple[str, ...]:
        """The names its values take: a region metric's, then its whole-image form."""
        return (self.name, f"{self.name}_whole") if self.region else (self.name,)

    def column(self, masked: bool) -> str:
        return self.name if masked or not self.region else f"{self.name}_whole"


CLIP = "clip-vit-large-patch14"
TABLE = {
    metric.name: metric
    for metric in (
        Metric("structure", "PIE-Bench", True, _structure, "dino-vitb8"),
        Metric("psnr", "PIE-Bench", False, _psnr, region=True),
        Metric("lpips", "PIE-Bench", True, _lpips, "lpips-squeeze", region=True),
        Metric("mse", "PIE-Bench", True, _mse, region=True),
        Metric("ssim", "PIE-Bench", False, _ssim, region=True),
        Metric("clip_whole", "PIE-Bench", False, _clip_whole, CLIP),
        Metric("clip_edited", "PIE-Bench", False, _clip_edited, CLIP, needs_mask=True),
        Metric("dinov2", "the iCD paper", False, _dinov2, "dinov2-base"),
        Metric("clip_image", "the iCD paper", False, _clip_image, CLIP),
    )
}
METRICS = tuple(TABLE)
COLUMNS = tuple(column for metric in TABLE.values() for column in metric.columns)


def metric_named(column: str) -> Metric:
    """The metric behind a name or a value's column (`psnr_whole` is psnr's)."""
    return next(m for m in TABLE.values() if column in m.columns)


# -- help texts ------------------------------------------------------------------------------------
def names_by_origin() -> str:
    """'PIE-Bench (structure, psnr, ...) and the iCD paper (dinov2, clip_image)'."""
    origins = dict.fromkeys(m.origin for m in TABLE.values())
    return " and ".join(f"{o} ({', '.join(m.name for m in TABLE.values() if m.origin == o)})" for o in origins)


def distances() -> str:
    """The metrics where lower is better, comma-separated."""
    return ", ".join(m.name for m in TABLE.values() if m.lower_is_better)


def modelless() -> str:
    """The metrics that need no evaluation model: 'psnr, mse and ssim'."""
    *others, last = [m.name for m in TABLE.values() if m.model is None]
    return f"{', '.join(others)} and {last}" if others else last


# -- reconstruction quality (reconstruct): eval's definitions on the whole image ------------------
def psnr(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
    """PSNR in dB of two RGB uint8 images, whole image: eval's `psnr_whole` (inf when identical)."""
    return TABLE["psnr"].compute(Pair(a, b), None)


def ssim(a: Image.Image | np.ndarray, b: Image.Image | np.ndarray) -> float:
    """SSIM of two RGB uint8 images, whole image: eval's `ssim_whole`."""
    return TABLE["ssim"].compute(Pair(a, b), None)


def region_scores(source, edit, mask: np.ndarray | None, names: Sequence[str], lpips=None) -> dict[str, float]:
    """The region metrics `names` as PIE-Bench computes them: both images times (1 - mask), then
    the whole-image metric over all pixels (zeros included); NaN when the unedited region is
    empty. Without a mask: the whole images. Keyed by the metric's name."""
    pair = Pair(source, edit, mask=mask)
    if pair.region is None:
        return {name: math.nan for name in names}
    return {name: TABLE[name].compute(pair, lpips) for name in names}


# -- scoring ---------------------------------------------------------------------------------------
def check_metrics(names: Sequence[str] | None) -> list[str]:
    """The metrics asked for, in METRICS order; None: every metric whose model is on disk."""
    from .eval_models import EVAL_MODELS

    if names is None:
        return [m.name for m in TABLE.values() if m.model is None or EVAL_MODELS[m.model].present]
    unknown = [n for n in names if n not in TABLE]
    if unknown:
        raise UsageError(f"unknown metric(s) {', '.join(map(repr, unknown))}", f"choose from {', '.join(METRICS)}")
    for name in names:
        if TABLE[name].model is not None:
            EVAL_MODELS[TABLE[name].model].require()
    return [m for m in METRICS if m in names]


@dataclass
class Scorer:
    """Every metric asked for, each model loaded once, on first need. `icd_size`: what dinov2
    and clip_image resize both images to (the iCD code's 512 x 512; None: as they are)."""

    metrics: list[str]
    device: torch.device | str = "cpu"
    icd_size: tuple[int, int] | None = ICD_SIZE
    _loaded: dict = field(default_factory=dict)

    def _model(self, name: str | None):
        from .eval_models import EVAL_MODELS
        from .eval_networks import NETWORKS

        if name is not None and name not in self._loaded:
            self._loaded[name] = NETWORKS[name](EVAL_MODELS[name].require(), self.device)
        return self._loaded.get(name)

    def score(self, source: Image.Image, edit: Image.Image, target: str, mask: np.ndarray | None) -> dict[str, float]:
        """One number per metric; region metrics are named `<metric>_whole` without a mask, and a
        metric that needs one (clip_edited) is left out."""
        pair = Pair(source, edit, target, mask, self.icd_size)
        scores: dict[str, float] = {}
        for metric in (TABLE[name] for name in self.metrics):
            if metric.needs_mask and mask is None:
                continue
            empty = metric.region and pair.region is None
            value = math.nan if empty else metric.compute(pair, self._model(metric.model))
            scores[metric.column(mask is not None)] = float(value)
        return scores
