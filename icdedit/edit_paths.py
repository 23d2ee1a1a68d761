"""Where an edit's files go, decided while planning (`plans.plan_edit`): the outputs of each
cell, the side-by-side image, the final latents, a grid's contact sheet and picked cell, each
checked before any model loads (distinct names, writable formats, never an input, never an
existing file without --overwrite). `-o` and `--save-latent` within `--out DIR`: a bare name is
placed in DIR, a path in DIR itself is kept, any other folder is refused."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import OutputError, UsageError
from .files import check_output, distinct_paths, make_folder, slug
from .grid import Grid
from .images import image_format
from .naming import default_output, edit_outputs
from .sources import Source

if TYPE_CHECKING:
    from .plans import EditRequest


def output_in_folder(output: Path | None, folder: Path | None, option: str = "-o") -> Path | None:
    """-o (or --save-latent) within --out DIR. The rule: a bare name is placed in DIR; a path
    with a folder part must be in DIR itself (then it is kept as given); any other conflicts."""
    if folder is None or output is None:
        return output
    if output.parent == Path(""):
        return folder / output
    if distinct_paths([output.parent, folder]):
        raise UsageError(
            f"{option} {output} is in another folder than --out {folder}",
            f"give {option} a bare file name (it goes in {folder}), or leave out --out",
        )
    return output


def output_folder(request: EditRequest) -> Path:
    """Where default names go: --out DIR (created), else the current folder."""
    if request.out is None:
        return Path("")
    if request.out.exists() and not request.out.is_dir():
        raise UsageError(f"--out {request.out} is a file", "--out names a folder; -o names the output file")
    return make_folder(request.out, "--out")


def edit_paths(request: EditRequest, targets: list[str]) -> dict:
    output, folder = output_in_folder(request.output, request.out), output_folder(request)
    images = edit_outputs(request.source, targets, output, request.overwrite, folder)
    side = None
    if request.side_by_side:
        # named after -o, else after the one target's image, else the photo: never after the
        # first of several targets
        named = output or (images[0] if len(targets) == 1 else folder / f"{request.source.stem}.png")
        side = default_output(named.with_name(f"{named.stem}-side-by-side{named.suffix}"), request.overwrite)
    latent = output_in_folder(request.save_latent, request.out, "--save-latent")
    if latent is not None and latent.suffix.lower() != ".safetensors":
        raise OutputError(f"--save-latent {latent} must end in .safetensors", "e.g. --save-latent edit.safetensors")
    check_outputs(request, images, [p for p in (side, latent) if p is not None])
    return {"outputs": (tuple(images),), "side_by_side": side, "latent": latent}


def grid_paths(request: EditRequest, grid: Grid, target: str, source: Source) -> dict:
    for option, value in (("--save-latent", request.save_latent), ("--side-by-side", request.side_by_side)):
        if value:
            raise UsageError(f"{option} cannot be used with --grid", "a grid writes each cell and a contact sheet")
    folder = output_folder(request)
    base = output_in_folder(request.output, request.out) or folder / f"{request.source.stem}-{slug(target)}.png"
    cells = [base.with_name(f"{base.stem}-{Grid.name_part(cell)}{base.suffix}") for cell in grid.cells()]
    sheet = base.with_name(f"{base.stem}-grid-{'-'.join(grid.keys)}{base.suffix}")
    scoring = plan_scoring(request, base, source)
    picked = [scoring[2]] if scoring and scoring[2] else []
    check_outputs(request, cells, [sheet, *picked])
    return {"outputs": tuple((path,) for path in cells), "grid": grid, "sheet": sheet, "scoring": scoring}


def check_outputs(request: EditRequest, images: list[Path], others: list[Path]) -> None:
    every = images + others
    if not distinct_paths(every):
        raise OutputError("two outputs would have the same name", "give distinct target prompts or -o names")
    for path in every:
        if path.suffix.lower() != ".safetensors":
            image_format(path)
        check_output(path, request.overwrite, inputs=tuple(p for p in (request.source, request.mask) if p))


def plan_scoring(request: EditRequest, base: Path, source: Source):
    """(metrics, pick rule, picked path) for --score / --pick, or None."""
    if not request.score and request.pick is None:
        return None
    if source.image is None:
        raise UsageError("--score and --pick compare each cell with the photo", "edit the photo, not a latent file")
    from .grid import parse_pick
    from .metrics import METRICS, TABLE, check_metrics

    rule = parse_pick(request.pick, METRICS) if request.pick is not None else None
    names = list(dict.fromkeys([*request.score, *(rule.metrics if rule else [])]))
    masked = [name for name in names if name in TABLE and TABLE[name].needs_mask]
    if masked:
        raise UsageError(f"{', '.join(masked)} needs PIE-Bench's edit region, which a grid has not", "use clip_whole")
    check_metrics(names)
    return tuple(names), rule, base if rule is not None else None  # without --pick the first metric ranks
