"""`icdedit eval`: PIE-Bench's editing metrics, and the iCD paper's, for edits on disk.

This module reads the inputs (a `batch` folder or a pairs file, PIE-Bench's masks), scores
each item through metrics.py's table (`Scorer`) and writes the table and the summary. The
conventions are those of PnPInversion's evaluation (`evaluation/evaluate.py`,
`evaluation/matrics_calculator.py`), so that the numbers compare with published tables:
docs/evaluation.md lists each one and where icdedit departs from it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import IcdEditError, InputError, UsageError
from .images import load_image
from .metrics import COLUMNS, ICD_SIZE, Scorer, check_metrics
from .metrics import METRICS as METRICS  # the metric names, here too for callers of eval
from .rows import EvalInputError

PIE_SIZE = (512, 512)  # PIE-Bench's masks are run-length encoded over a 512 x 512 grid


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


def items_from_batch(folder: Path, note=None) -> list[tuple[int, Path, Path, str, dict]]:
    """(item number, photo, edit, target prompt, settings) of every done item of a `batch` output
    folder, the last line of each item (a killed run may have left earlier ones). Paths recorded
    relative to where `batch` ran are found from here, or from beside the folder. A line that is
    not UTF-8 text, or a done line whose image, output or prompt is not text, is skipped; `note`
    (a function of one line of text) hears which."""
    note = note or (lambda text: None)
    if not folder.is_dir():
        raise EvalInputError(f"{folder} is not a folder", "give a `batch` output folder or a pairs .csv")
    reports = sorted(folder.glob("results*.jsonl"))
    if not reports:
        raise EvalInputError(f"{folder} has no results.jsonl", "is it a `batch` output folder? (or give a pairs .csv)")
    found: dict[tuple[str, int], tuple] = {}
    for report in reports:
        try:
            lines = report.read_bytes().splitlines()
        except OSError as exc:
            raise EvalInputError(f"cannot read {report}: {exc.strerror or exc}", "check its permissions") from None
        for line_number, raw in enumerate(lines, start=1):
            try:
                record = json.loads(raw.decode("utf-8"))
                number = int(record["item"])
            except UnicodeDecodeError:
                note(f"note: {report.name} line {line_number} is not UTF-8 text: skipped")
                continue
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue
            if record.get("status") != "done" or not {"image", "output", "tgt"} <= record.keys():
                found.pop((report.name, number), None)
                continue
            if not all(isinstance(record[k], str) and record[k] for k in ("image", "output", "tgt")):
                note(
                    f"note: {report.name} line {line_number}: item {number}'s image, output or tgt is not text: skipped"
                )
                found.pop((report.name, number), None)
                continue
            settings = record.get("settings") if isinstance(record.get("settings"), dict) else {}
            base = _base(Path(record["output"]), folder)
            paths = [Path(record[k]) if base is None else base / record[k] for k in ("image", "output")]
            found[(report.name, number)] = (number, *paths, str(record["tgt"]), settings)
    if not found:
        raise _no_edits(folder, reports)
    return [found[k] for k in sorted(found, key=lambda k: (k[1], k[0]))]


def _no_edits(folder: Path, reports: list[Path]) -> EvalInputError:
    """Why a folder with results files has nothing to score: a `generate --prompts` folder (its
    done items are generated images, with no photo to compare them with), or no done edit yet."""
    generated = 0
    for report in reports:
        for raw in report.read_bytes().splitlines():
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            generated += isinstance(record, dict) and record.get("status") == "done" and "prompt" in record
    if generated:
        return EvalInputError(
            f"{folder} is a `generate --prompts` folder ({generated} generated image(s), no photos): eval scores "
            "edits against the photos they were made from",
            "give an edit batch folder (`icdedit batch ... --out FOLDER`) or a pairs .csv (source, edit, tgt)",
        )
    names = ", ".join(r.name for r in reports)
    return EvalInputError(f"{folder}: no done edits in {names}", "run the batch first (or resume it: same command)")


def _base(output: Path, folder: Path) -> Path | None:
    """Where `batch` ran, for its relative paths: here, or the folder's nearest ancestor under which
    the recorded output exists (`--out runs/a` run from X records runs/a/...: X). None: as recorded."""
    if output.is_absolute() or output.exists():
        return None
    for ancestor in folder.resolve().parents:
        if (ancestor / output).exists():
            return ancestor
    return None


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
        if not isinstance(entry["mask"], list):
            raise InputError(
                f"{self.path.name}, {photo.stem}: the mask is {type(entry['mask']).__name__}, not a list",
                "PIE-Bench's masks are lists of (start, length) pairs",
            )
        try:
            return decode_rle(entry["mask"])
        except ValueError as exc:
            raise InputError(f"{self.path.name}, {photo.stem}: {exc}") from None


def mask_from_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A user's mask image: white (over half intensity) = edited, resized to the photo's size."""
    mask = load_image(path).convert("L").resize(size, Image.Resampling.NEAREST)
    return (np.asarray(mask) > 127).astype(np.float32)


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
    icd_size: tuple[int, int] | None = ICD_SIZE  # dinov2, clip_image: both images resized first (None: not)


def metric_columns(rows: list[dict]) -> list[str]:
    """The metric columns present, in METRICS order (a region metric, then its _whole form)."""
    return [name for name in COLUMNS if any(name in row for row in rows)]


def _raw_items(inputs: Path, note=None) -> list[tuple[int, Path, Path, str, Path | None, str | None]]:
    """(item number, photo, edit, target, mask image or None, settings label or None) per item. A batch made
    with --grid (items whose settings differ) labels each item with the settings that vary."""
    if inputs.is_dir():
        found = items_from_batch(inputs, note)
        varying = sorted({k for *_, s in found for k in s if len({json.dumps(x.get(k)) for *_, x in found}) > 1})
        label = (lambda s: ", ".join(f"{k}={s.get(k)}" for k in varying)) if varying else (lambda s: None)
        return [(n, source, edit, target, None, label(settings)) for n, source, edit, target, settings in found]
    from .rows import MANIFEST_SUFFIXES, items_from_pairs

    if inputs.suffix.lower() not in MANIFEST_SUFFIXES:
        raise EvalInputError(
            f"{inputs} is neither a folder nor a pairs file", "give a `batch` output folder or a .csv of pairs"
        )
    if not inputs.is_file():
        raise EvalInputError(f"pairs file not found: {inputs}")
    return [(n, *pair, None) for n, pair in enumerate(items_from_pairs(inputs), start=1)]


def is_metrics_table(path: Path) -> bool:
    """Whether `path` is a table eval wrote (a plain file whose header is eval's: item, source,
    edit, target, then only settings, metric columns and error): a derived report that a rerun
    replaces without --overwrite. Anything else there is someone's file and is kept."""
    if path.is_symlink() or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8") as handle:
            header = handle.readline().rstrip("\r\n").split(",")
    except (OSError, UnicodeDecodeError):
        return False
    known = {"settings", "error", *COLUMNS}
    return header[:4] == ["item", "source", "edit", "target"] and set(header[4:]) <= known


def skipped_metrics(asked: Sequence[str] | None) -> list[dict]:
    """With no --metrics, the metrics left out because their evaluation model is not on disk,
    each with the download that enables it."""
    from .eval_models import EVAL_MODELS
    from .metrics import TABLE

    if asked is not None:
        return []
    absent = [m for m in TABLE.values() if m.model is not None and not EVAL_MODELS[m.model].present]
    return [{"metric": m.name, "download": f"icdedit download {m.model}"} for m in absent]


def skipped_note(skipped: list[dict]) -> str:
    """'note: skipped structure (icdedit download dino-vitb8), ...: their models are not on disk'."""
    by_download: dict[str, list[str]] = {}
    for entry in skipped:
        by_download.setdefault(entry["download"], []).append(entry["metric"])
    parts = [f"{', '.join(names)} (`{download}`)" for download, names in by_download.items()]
    return f"note: skipped {'; '.join(parts)}: their evaluation models are not on disk"


def run_eval(request: EvalRequest, reporter=None) -> dict:
    from .files import check_output, write_atomically
    from .loader import resolve_device
    from .reporting import Reporter

    reporter = reporter or Reporter()
    names = check_metrics(request.metrics)
    skipped = skipped_metrics(request.metrics)
    masks = PieBenchMasks(request.pie_bench) if request.pie_bench is not None else None
    raw = _raw_items(request.inputs, reporter.note)
    default = (
        request.inputs / "metrics.csv"
        if request.inputs.is_dir()
        else request.inputs.with_name(f"{request.inputs.stem}-metrics.csv")
    )
    output = request.output or default
    if output.suffix.lower() != ".csv":
        raise UsageError(f"-o {output} must end in .csv", "e.g. -o metrics.csv")
    # the pairs file (and a PIE-Bench mapping file) are inputs: never written over, as in `edit`
    own_inputs = tuple(p for p in (request.inputs, request.pie_bench) if p is not None and Path(p).is_file())
    # eval's own table from an earlier run is replaced (atomically); a foreign file needs --overwrite
    check_output(output, request.overwrite or is_metrics_table(output), own_inputs)
    if skipped:
        reporter.note(skipped_note(skipped))
    if masks is None and "clip_edited" in names and all(mask is None for *_, mask, _ in raw):
        reporter.note("note: clip_edited needs masks (--pie-bench, or a mask column); region metrics are _whole")
    scorer = Scorer(names, resolve_device(request.device), request.icd_size)
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
        failed = sum("error" in r for r in rows)
        step(done=len(rows) - failed, failed=failed)
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
        "skipped_metrics": skipped,
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
