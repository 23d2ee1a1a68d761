"""The catalog commands' work: which models exist and what of them is on disk, downloads."""

from __future__ import annotations

from dataclasses import dataclass

from . import download
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
            }
        )
    return report


@dataclass(frozen=True)
class DownloadRequest:
    model: str
    dtype: str = "fp32"


def run_download(request: DownloadRequest, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    spec = resolve_model(request.model)
    if spec.random_weights:
        return {"command": "download", "model": spec.name, "placed": [], "note": "built locally, nothing to download"}
    placed = download.download_icd_files(spec, progress=reporter.bytes_progress())
    base = download.download_base(spec, "fp16" if request.dtype == "fp16" else "fp32")
    return {"command": "download", "model": spec.name, "placed": [str(p) for p in placed], "base": str(base)}
