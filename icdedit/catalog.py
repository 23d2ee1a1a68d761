"""The catalog commands' work: which models exist and what of them is on disk, downloads."""

from __future__ import annotations

from dataclasses import dataclass

from . import download
from .eval_models import EVAL_MODELS, download_eval_model
from .preview import PREVIEW_DECODERS, download_preview_decoder
from .reporting import Reporter
from .specs import resolve_model


def models_report() -> list[dict]:
    """Every known model with, for each part, whether it is on disk, its size and its path."""
    from .specs import DEFAULT_MODEL, builtin_specs

    report = []
    for spec in sorted(builtin_specs().values(), key=lambda s: (s.name != DEFAULT_MODEL, s.name)):
        parts = download.model_status(spec)
        report.append(
            {
                "model": spec.name,
                "description": spec.description,
                "ready": all(p.present for p in parts),
                "parts": [
                    {
                        "part": p.part,
                        "present": p.present,
                        "size_bytes": p.size_bytes,
                        "location": p.location,
                        "source": p.source,
                    }
                    for p in parts
                ],
                "download_bytes": download.missing_download_bytes(spec),
                "download_command": download.download_command(spec),
                "kind": "editing",
            }
        )
    report += [_eval_entry(model) for model in EVAL_MODELS.values()]
    return report + [_preview_entry(decoder) for decoder in PREVIEW_DECODERS.values()]


def _eval_entry(model) -> dict:
    """An evaluation model (`icdedit eval`) in the same shape: one part, its weights."""
    entry = _one_part_entry(model, "weights", model.hub_id or model.url, "evaluation")
    return {**entry, "metrics": list(model.metrics)}


def _preview_entry(decoder) -> dict:
    """A preview decoder (`--preview`) in the same shape: one part, the decoder."""
    return {**_one_part_entry(decoder, "decoder", decoder.hub_id, "preview"), "family": decoder.family}


def _one_part_entry(model, part: str, source: str, kind: str) -> dict:
    """A model that is one folder (name, description, folder, present, approx_bytes), as listed."""
    size = sum(p.stat().st_size for p in model.folder.rglob("*") if p.is_file()) if model.present else None
    return {
        "model": model.name,
        "description": model.description,
        "ready": model.present,
        "parts": [
            {
                "part": part,
                "present": model.present,
                "size_bytes": size if model.present else model.approx_bytes,
                "location": str(model.folder),
                "source": source,
            }
        ],
        "download_bytes": 0 if model.present else model.approx_bytes,
        "download_command": f"icdedit download {model.name}",
        "kind": kind,
    }


@dataclass(frozen=True)
class DownloadRequest:
    model: str
    dtype: str = "fp32"


def run_download(request: DownloadRequest, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    if request.model in EVAL_MODELS:
        folder = download_eval_model(EVAL_MODELS[request.model], progress=reporter.bytes_progress())
        return {"command": "download", "model": request.model, "placed": [str(folder)]}
    if request.model in PREVIEW_DECODERS:
        folder = download_preview_decoder(PREVIEW_DECODERS[request.model])
        return {"command": "download", "model": request.model, "placed": [str(folder)]}
    spec = resolve_model(request.model)
    if spec.random_weights:
        return {"command": "download", "model": spec.name, "placed": [], "note": "built locally, nothing to download"}
    placed = download.download_icd_files(spec, progress=reporter.bytes_progress())
    base = download.download_base(spec, "fp16" if request.dtype == "fp16" else "fp32")
    return {"command": "download", "model": spec.name, "placed": [str(p) for p in placed], "base": str(base)}
