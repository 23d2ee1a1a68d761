"""The catalog commands' work: which models exist and what of them is on disk, downloads.

Nothing here imports torch (`icdedit models` answers at once): the preview decoders' table is
read from `preview.py` only when a listing or a download needs it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path

from . import download
from .captions import CAPTIONERS, download_captioner
from .errors import UsageError
from .eval_models import EVAL_MODELS, download_eval_model
from .families import FAMILIES, TINY_MODELS
from .paths import weights_home
from .reporting import Reporter


def _preview_decoders() -> dict:
    from .preview import PREVIEW_DECODERS

    return PREVIEW_DECODERS


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
    report += [_tiny_entry(name, family) for name, family in TINY_MODELS.items()]
    report += [_eval_entry(model) for model in EVAL_MODELS.values()]
    report += [_one_part_entry(model, "weights", model.hub_id, "captioner") for model in CAPTIONERS.values()]
    return report + [_preview_entry(decoder) for decoder in _preview_decoders().values()]


def _tiny_entry(name: str, family: str) -> dict:
    """A random-weight model (`--model tiny`, `tiny-xl`): built on first use, never downloaded.
    Listed without building it (that would import torch)."""
    folder = weights_home() / name
    built = (folder / "model.yaml").is_file()
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if built else None
    return {
        "model": name,
        "description": f"random weights in {FAMILIES[family].label}'s formats: checks an installation, "
        "its images are noise",
        "ready": True,  # nothing to fetch: the first use builds it (seconds)
        "parts": [
            {"part": "random weights", "present": built, "size_bytes": size, "location": str(folder), "source": None}
        ],
        "download_bytes": 0,
        "download_command": None,
        "kind": "editing",
        "family": family,
        "random_weights": True,
    }


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


def download_names() -> dict[str, list[str]]:
    """Every name `icdedit download` takes, by kind (a model .yaml file is taken too)."""
    from .specs import builtin_specs

    return {
        "editing models": [*builtin_specs(), *TINY_MODELS],
        "evaluation models": list(EVAL_MODELS),
        "captioners": list(CAPTIONERS),
        "preview decoders": list(_preview_decoders()),
    }


def check_download_name(name: str) -> None:
    """A name `download` does not know: one usage error listing every name it takes, with the
    closest one first when the name looks misspelt. A path to a .yaml file is left to the loader."""
    names = download_names()
    known = [n for kind in names.values() for n in kind]
    if name in known or Path(name).suffix in (".yaml", ".yml"):
        return
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    listing = "; ".join(f"{kind}: {', '.join(values)}" for kind, values in names.items())
    suggestion = f"did you mean {close[0]!r}? " if close else ""
    raise UsageError(f"unknown model {name!r}", f"{suggestion}download takes {listing}; or a model .yaml file")


def run_download(request: DownloadRequest, reporter: Reporter | None = None) -> dict:
    reporter = reporter or Reporter()
    check_download_name(request.model)
    if request.model in EVAL_MODELS:
        folder = download_eval_model(EVAL_MODELS[request.model], progress=download.in_units(reporter.bytes_progress()))
        return {"command": "download", "model": request.model, "placed": [str(folder)]}
    if request.model in CAPTIONERS:
        folder = download_captioner(CAPTIONERS[request.model])
        return {"command": "download", "model": request.model, "placed": [str(folder)]}
    if request.model in _preview_decoders():
        from .preview import download_preview_decoder

        folder = download_preview_decoder(_preview_decoders()[request.model])
        return {"command": "download", "model": request.model, "placed": [str(folder)]}
    from .specs import resolve_model

    spec = resolve_model(request.model)
    if spec.random_weights:
        return {"command": "download", "model": spec.name, "placed": [], "note": "built locally, nothing to download"}
    placed = download.download_icd_files(spec, progress=download.in_units(reporter.bytes_progress()))
    base = download.download_base(spec, "fp16" if request.dtype == "fp16" else "fp32")
    return {"command": "download", "model": spec.name, "placed": [str(p) for p in placed], "base": str(base)}
