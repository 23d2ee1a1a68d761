"""Output names: defaults that never overwrite, one name per target of an edit."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .files import NAME_MAX, slug

NUMBER_ROOM = 8  # bytes kept free in a default name for the "-2", "-3", ... that avoid overwriting
HASH_LENGTH = 8


def fit_stem(stem: str, room: int, keep_end: int = 0) -> str:
    """A stem within `room` bytes: a longer one is cut (at character boundaries) and gets a short
    hash of the whole stem, so that two long names that share a beginning stay apart. The last
    `keep_end` bytes are kept (what a name adds at its end: `-side-by-side`, a target's slug)."""
    whole = os.fsencode(stem)
    if len(whole) <= room:
        return stem
    digest = hashlib.sha256(whole).hexdigest()[:HASH_LENGTH]
    end = "-" + whole[len(whole) - keep_end :].decode(errors="ignore") if keep_end else ""
    head = max(room - HASH_LENGTH - 1 - len(os.fsencode(end)), 0)
    return f"{whole[:head].decode(errors='ignore')}-{digest}{end}"


END_KEPT = 48  # bytes of a long default name's end kept when it is shortened


def fit_name(path: Path) -> Path:
    """A default name within NAME_MAX bytes, with room for a number: a photo with a long name
    still gets outputs beside it instead of an error after the model ran."""
    room = NAME_MAX - NUMBER_ROOM - len(os.fsencode(path.suffix))
    return path.with_name(fit_stem(path.stem, room, END_KEPT) + path.suffix)


def default_output(path: Path, overwrite: bool) -> Path:
    """A default name never overwrites: without --overwrite, -2, -3, ... are appended. A name
    over the file-name limit is shortened (fit_name)."""
    path = fit_name(path)
    if overwrite or not path.exists():
        return path
    n = 2
    while (candidate := path.with_name(f"{path.stem}-{n}{path.suffix}")).exists():
        n += 1
    return candidate


def edit_outputs(
    source: Path, targets: list[str], output: Path | None, overwrite: bool, folder: Path = Path("")
) -> list[Path]:
    """One image per target: -o as given for one target, else -o's stem plus the target's slug;
    without -o, the photo's stem plus the target's slug, in `folder` (edit's --out)."""
    if output is None:
        tails = [f"-{slug(t)}.png" for t in targets]
        room = NAME_MAX - NUMBER_ROOM - max(len(os.fsencode(tail)) for tail in tails)
        stem = fit_stem(source.stem, room)  # the photo's name is shortened, the target's slug kept
        return [default_output(folder / (stem + tail), overwrite) for tail in tails]
    if len(targets) == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i + 1}-{slug(t)}{output.suffix}") for i, t in enumerate(targets)]
