"""`icdedit eval`: thin over `icdedit.evaluation`."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .. import metrics as metric_table
from .app import command, emit, examples, progress_bar, reporter, stdout
from .options import DeviceOpt, JsonOpt, OverwriteOpt


@command(
    name="eval",
    help=(
        f"Score edits with the metrics of {metric_table.names_by_origin()}, as PnPInversion's evaluation and "
        "the iCD code compute them.\n\n"
        "Examples:\n\n"
        + examples(
            "icdedit eval edited/ --pie-bench mapping_file.json      # a batch output folder, PIE-Bench masks",
            "icdedit eval pairs.csv --metrics psnr,ssim,mse          # columns source, edit, tgt [, mask]",
        )
        + "\n\nWith masks the region metrics are computed on the unedited region (both images times 1 - mask); "
        "without, on the whole image, named psnr_whole etc. Models come through `icdedit download` "
        f"(see `icdedit models`); {metric_table.modelless()} need none. Exit code 1 when an item could not be scored."
    ),
    no_args_is_help=True,
)
def eval_(
    ctx: typer.Context,
    inputs: Annotated[
        Path, typer.Argument(metavar="EDITS", help="A `batch` output folder (its results.jsonl), or a pairs .csv.")
    ],
    pie_bench: Annotated[
        Optional[Path], typer.Option("--pie-bench", help="PIE-Bench's mapping_file.json: masks by photo file stem.")
    ] = None,
    metrics: Annotated[
        Optional[str],
        typer.Option(
            "--metrics",
            help=(
                f"Comma-separated, from {', '.join(metric_table.METRICS)}. Default: all whose models are on disk "
                "(the others are listed, each with the `icdedit download` that enables it)."
            ),
        ),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output",
            "-o",
            help=(
                "The per-item CSV (default: metrics.csv in the folder). A table an earlier eval wrote there is "
                "replaced; any other file needs --overwrite."
            ),
        ),
    ] = None,
    device: DeviceOpt = "auto",
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    from .. import evaluation

    names = tuple(n.strip() for n in metrics.split(",") if n.strip()) if metrics else None
    request = evaluation.EvalRequest(inputs, pie_bench, names, output, device, overwrite)
    with progress_bar(ctx, not as_json, items=True) as progress:
        result = evaluation.run_eval(request, reporter(ctx, progress))
    if as_json:
        emit(result, True, [])
    else:
        groups = result.get("by_settings") or {"": result["summary"]}
        table = Table(*(["settings"] if len(groups) > 1 else []), "metric", "mean", "items", box=None)
        for label, summary in groups.items():
            for i, (name, entry) in enumerate(summary.items()):
                mean = "nan" if entry["mean"] is None or math.isnan(entry["mean"]) else f"{entry['mean']:.6g}"
                table.add_row(*([label if i == 0 else ""] if len(groups) > 1 else []), name, mean, str(entry["count"]))
        stdout.print(table)
        for number in result["failed"]:
            stdout.print(f"not scored: item {number}", markup=False)
        stdout.print(f"per item: {result['csv']}", markup=False)
    if result["failed"]:
        raise typer.Exit(1)
