"""The evaluation models (`icdedit eval`): what each is, where it lives, fetching it.

Each lives in its own folder under the weights folder, `$ICDEDIT_HOME/eval/<name>/`, so that
nothing is looked up on the hub at run time: a hub model as `save_pretrained` lays it out
(`icdedit download <name>` fetches only the files it needs), LPIPS's SqueezeNet backbone as
torchvision's checkpoint file in `checkpoints/` (read with weights_only=True; torchvision is not needed).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .download import DownloadError, fetch, in_units, offline
from .errors import ModelError, first_line
from .paths import weights_home
from .weights import human_size, offline_reason

HUB_FILES = ("*.json", "*.txt")  # configs, tokenizer and processor files; weights chosen below
WEIGHT_FILES = ("*.safetensors", "pytorch_model.bin")  # safetensors where the repository has them


@dataclass(frozen=True)
class EvalModel:
    name: str
    description: str
    approx_bytes: int
    hub_id: str | None = None  # a Hugging Face hub repository
    url: str | None = None  # or one checkpoint file (torchvision's naming: sha256 prefix in the name)

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metrics that run it (metrics.TABLE says which model each metric needs)."""
        from .metrics import TABLE

        return tuple(m.name for m in TABLE.values() if m.model == self.name)

    @property
    def folder(self) -> Path:
        return weights_home() / "eval" / self.name

    @property
    def checkpoint(self) -> Path | None:
        return self.folder / "checkpoints" / Path(self.url).name if self.url else None

    @property
    def present(self) -> bool:
        if self.checkpoint is not None:
            return self.checkpoint.is_file()
        weights = [*self.folder.glob("*.safetensors"), self.folder / "pytorch_model.bin"]
        return (self.folder / "config.json").is_file() and any(w.is_file() for w in weights)

    def require(self) -> Path:
        """Its folder, or a one-line error naming the command that fetches it."""
        if not self.present:
            raise ModelError(
                f"evaluation model {self.name!r} (for {', '.join(self.metrics)}) is not in {self.folder}",
                f"run `icdedit download {self.name}` (needs network), or leave those metrics out with --metrics",
            )
        return self.folder

    def ensure(self, reporter=None, offline_flag: bool = False) -> Path:
        """Its folder, fetched first when missing, as a model run fetches its weights (announced
        on `reporter`, bytes on its progress bar); offline (`offline_flag`, HF_HUB_OFFLINE): the
        one-line error of `require`, saying why nothing was fetched."""
        if self.present:
            return self.folder
        why = offline_reason(offline_flag)
        if why:
            raise ModelError(
                f"evaluation model {self.name!r} (for {', '.join(self.metrics)}) is not in {self.folder}",
                f"{why}: run `icdedit download {self.name}` on a machine with network, or leave those metrics out "
                "with --metrics",
            )
        if reporter is not None:
            source = self.url or f"the Hugging Face hub ({self.hub_id})"
            reporter.note(
                f"fetching evaluation model {self.name!r} for {', '.join(self.metrics)} "
                f"(about {human_size(self.approx_bytes)}) from {source}"
            )
        return download_eval_model(self, progress=None if reporter is None else in_units(reporter.bytes_progress()))


EVAL_MODELS = {
    model.name: model
    for model in (
        EvalModel(
            "dino-vitb8",
            "DINO ViT-B/8 (PIE-Bench's structure distance)",
            350_000_000,
            hub_id="facebook/dino-vitb8",
        ),
        EvalModel(
            "clip-vit-large-patch14",
            "CLIP ViT-L/14 (PIE-Bench's CLIP scores, the iCD paper's CLIP image similarity)",
            1_710_000_000,
            hub_id="openai/clip-vit-large-patch14",
        ),
        EvalModel(
            "dinov2-base",
            "DINOv2 ViT-B/14 (the iCD paper's DINOv2 similarity)",
            350_000_000,
            hub_id="facebook/dinov2-base",
        ),
        EvalModel(
            "lpips-squeeze",
            "SqueezeNet 1.1 (torchvision's weights), LPIPS's backbone; LPIPS's own layers ship with torchmetrics",
            4_966_400,
            url="https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
        ),
    )
}


def download_eval_model(model: EvalModel, progress=None) -> Path:
    if model.present:
        return model.folder
    if offline():
        raise DownloadError(
            f"HF_HUB_OFFLINE is set: cannot fetch evaluation model {model.name!r}",
            f"run `icdedit download {model.name}` on a machine with network and copy {model.folder} here",
        )
    if model.url:
        checkpoint = fetch(model.url, model.checkpoint, progress=progress)
        prefix = checkpoint.stem.rsplit("-", 1)[-1]
        if not hashlib.sha256(checkpoint.read_bytes()).hexdigest().startswith(prefix):
            checkpoint.unlink()
            raise DownloadError(f"{model.url}: the file's sha256 does not start with {prefix}", "run the command again")
        return model.folder
    return fetch_hub_folder(model.hub_id, model.folder, f"evaluation model {model.hub_id!r}")


def fetch_hub_folder(hub_id: str, folder: Path, what: str, patterns: list[str] | None = None) -> Path:
    """A hub repository's files into `folder`: those matching `patterns`, by default its configs
    and weights (safetensors where it has them)."""
    from huggingface_hub import list_repo_files, snapshot_download

    try:
        if patterns is None:
            files = list_repo_files(hub_id)
            weights = WEIGHT_FILES[0] if any(f.endswith(".safetensors") for f in files) else WEIGHT_FILES[1]
            patterns = [*HUB_FILES, weights]
        snapshot_download(hub_id, allow_patterns=patterns, local_dir=folder)
    except Exception as exc:  # noqa: BLE001 - the hub client raises many kinds; all mean "not fetched"
        raise DownloadError(
            f"{what} could not be fetched from the hub ({first_line(exc)[:200]})",
            "check the network (HF_ENDPOINT, HF_TOKEN) and run the same command again",
        ) from None
    return folder
