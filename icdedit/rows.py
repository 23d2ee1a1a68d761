"""Row files, read in one place: batch manifests, prompt files and eval's pairs files are CSV,
TSV, JSONL or YAML (a prompt file may also be plain text, one prompt a line), read by
`read_manifest` into rows of named cells; what each command makes of its rows is here too
(prompts and seeds; source, edit and target) or in `manifests.py` (a batch row's edit).

A file that cannot be used as a whole is one error naming it (exit code 2); a problem of one
row (a line that is not JSON, more cells than the header names) stays on that row, as its
`EXTRA_CELLS` cell, for the command to record.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import yaml

from .errors import IcdEditError

MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".yaml", ".yml")
EXTRA_CELLS = "\0extra cells"  # where the CSV reader puts cells beyond the header's columns
# PIE-Bench's column names, as icdedit's
PIE_BENCH = {
    "file_name": "image",
    "old_caption": "src",
    "edited_caption": "tgt",
    "blended_words": "blend",
}  # PIE-Bench's column names, as icdedit's


class ManifestError(IcdEditError):
    """The manifest (or the command line) cannot be used; `problems` lists every one."""

    exit_code = 2

    def __init__(self, problems: list[str]):
        super().__init__(
            f"{len(problems)} problem(s) in the batch input: " + "; ".join(problems[:20]),
            "fix the problems above; nothing was run",
        )
        self.problems = problems


def _is_index_column(name) -> bool:
    """pandas' unnamed index, as `DataFrame.to_csv` writes it: an empty header or 'Unnamed: N'."""
    return name is None or not str(name).strip() or re.fullmatch(r"Unnamed: \d+", str(name).strip()) is not None


def read_manifest(path: Path) -> list[dict]:
    """Rows of a CSV, TSV, JSONL or YAML manifest as dicts (PIE-Bench columns renamed, pandas'
    unnamed index columns dropped). An unreadable or empty file is a ManifestError."""
    suffix = path.suffix.lower()
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise ManifestError([f"{path}: cannot read ({exc.strerror})"]) from None
    except UnicodeDecodeError:
        raise ManifestError([f"{path}: not UTF-8 text (is it a {suffix[1:].upper()} file?)"]) from None
    if not text.strip():
        raise ManifestError([f"{path}: the manifest is empty"])
    try:
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",", restkey=EXTRA_CELLS)
            rows = list(reader)
        elif suffix == ".jsonl":
            rows = []
            for number, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:  # one bad line is that row's problem
                        rows.append({EXTRA_CELLS: f"line {number} is not JSON ({exc.msg})"})
        else:
            rows = yaml.safe_load(text) or []
            rows = rows.get("items", rows) if isinstance(rows, dict) else rows
    except (yaml.YAMLError, csv.Error) as exc:
        raise ManifestError([f"{path}: not valid {suffix[1:].upper()} ({str(exc).splitlines()[0]})"]) from None
    if not isinstance(rows, list):
        raise ManifestError([f"{path}: expected a list of rows with image, src and tgt"])
    if not rows:
        raise ManifestError([f"{path}: the manifest has no rows"])
    return [normalise_row(row) for row in rows]


def normalise_row(row: dict) -> dict:
    """PIE-Bench's column names as icdedit's; pandas' unnamed index columns dropped."""
    if not isinstance(row, dict):  # that row's problem, as a JSONL line that is not JSON is
        return {EXTRA_CELLS: f"{row!r} is not a row of named cells"}
    return {PIE_BENCH.get(k, k): v for k, v in row.items() if k == EXTRA_CELLS or not _is_index_column(k)}


# -- prompt files (generate --prompts) --------------------------------------------------------
PROMPT_COLUMNS = ("caption", "prompt")  # the official prompt lists' column, and the plain name
FILE_HINT = "a .txt file with one prompt a line, or a .csv/.tsv/.jsonl with a caption or prompt column"


class PromptFileError(IcdEditError):
    """A prompt file that cannot be used as a whole: nothing is run, exit code 2."""

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(message, FILE_HINT)


def read_prompts(path: Path) -> list[tuple[str, object, str | None]]:
    """(prompt, seed cell or None, the row's problem or None) per row: a text file (one prompt a
    line, blank lines skipped), or a manifest (CSV, TSV, JSONL, YAML, read as `batch` reads
    one) with a `caption` or `prompt` column and optionally `seed`: the official
    generation_coco.csv and generation_parti-prompts.csv as they are."""
    if path.suffix.lower() not in MANIFEST_SUFFIXES:
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except FileNotFoundError:
            raise PromptFileError(f"prompt file not found: {path}") from None
        except OSError as exc:
            raise PromptFileError(f"{path}: cannot read ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise PromptFileError(f"{path}: not UTF-8 text") from None
        return [(line.strip(), None, None) for line in text.splitlines() if line.strip()]
    if not path.is_file():
        raise PromptFileError(f"prompt file not found: {path}")
    try:
        rows = read_manifest(path)
    except ManifestError as exc:  # unreadable, empty, not valid CSV / JSONL / YAML
        raise PromptFileError("; ".join(exc.problems)) from None
    columns = [k for k in dict.fromkeys(k for row in rows for k in row) if k != EXTRA_CELLS]
    column = next((c for c in PROMPT_COLUMNS if c in columns), None)
    if column is None:
        raise PromptFileError(f"{path}: no caption or prompt column (columns: {', '.join(map(repr, columns))})")
    return [(str(row.get(column) or "").strip(), row.get("seed"), _row_problem(row)) for row in rows]


def _row_problem(row: dict) -> str | None:
    extra = row.get(EXTRA_CELLS)
    if extra is None:
        return None
    return extra if isinstance(extra, str) else f"more cells than the header names: {extra!r}"


# -- pairs files (eval) ------------------------------------------------------------------------
class EvalInputError(IcdEditError):
    """An evaluation input that cannot be used as a whole (exit code 2; nothing was scored)."""

    exit_code = 2


PAIR_COLUMNS = {"source": ("source", "image", "photo"), "edit": ("edit", "output"), "target": ("tgt", "target")}


def items_from_pairs(path: Path) -> list[tuple[Path, Path, str, Path | None]]:
    """Explicit pairs (edits made by any tool): a CSV/TSV/JSONL/YAML with source, edit and tgt
    columns and optionally mask (an image, white = edited); paths relative to the file."""
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
