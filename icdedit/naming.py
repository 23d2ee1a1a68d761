"""Output names: defaults that never overwrite, one name per target of an edit."""

from __future__ import annotations

from pathlib import Path

from .files import slug


def default_output(path: Path, overwrite: bool) -> Path:
    """A default name never overwrites: without --overwrite, -2, -3, ... are appended."""
    if overwrite or not path.exists():
        return path
    n = 2
    while (candidate := path.with_name(f"{path.stem}-{n}{path.suffix}")).exists():
        n += 1
    return candidate


def edit_outputs(source: Path, targets: list[str], output: Path | None, overwrite: bool) -> list[Path]:
    """One image per target: -o as given for one target, else -o's stem plus the target's slug."""
    if output is None:
        return [default_output(Path(f"{source.stem}-{slug(t)}.png"), overwrite) for t in targets]
    if len(targets) == 1:
        return [output]
    return [output.with_name(f"{output.stem}-{i + 1}-{slug(t)}{output.suffix}") for i, t in enumerate(targets)]
