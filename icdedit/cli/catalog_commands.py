"""The catalog commands: models, download and presets."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .. import catalog
from ..errors import UsageError
from ..families import FAMILIES
from .app import command, emit, examples, progress_bar, reporter, stdout
from .options import JsonOpt


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


@command(
    help="Show the known models and which of their parts are on disk.\n\nExample:\n\n" + examples("icdedit models")
)
def models(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    report = catalog.models_report()
    if as_json:  # the shape of every command's --json: one object naming the command
        emit({"command": "models", "models": report}, True, [])
        return
    table = Table(box=None, pad_edge=False)
    for column in ("model", "part", "on disk", "size", "path"):
        table.add_column(column, overflow="fold", no_wrap=column != "path")
    for entry in (e for e in report if e["kind"] == "editing"):
        for i, part in enumerate(entry["parts"]):
            if entry.get("random_weights"):
                on_disk, size = ("yes", _size(part["size_bytes"])) if part["present"] else ("built on first use", "-")
            else:
                on_disk = "yes" if part["present"] else "no"
                size = _size(part["size_bytes"]) if part["present"] else f"~{_size(part['size_bytes'])}"
            table.add_row(entry["model"] if i == 0 else "", part["part"], on_disk, size, part["location"])
    stdout.print(table)
    for entry in report:
        if not entry["ready"] and entry["kind"] == "editing":
            stdout.print(
                f"{entry['model']}: about {_size(entry['download_bytes'])} to download: {entry['download_command']}",
                markup=False,
            )
    tiny = ", ".join(e["model"] for e in report if e.get("random_weights"))
    stdout.print(f"{tiny}: random weights, built locally on first use, nothing to download", markup=False)
    stdout.print("evaluation models (icdedit eval; psnr, mse and ssim need none):", markup=False)
    for entry in (e for e in report if e["kind"] == "evaluation"):
        state = "on disk" if entry["ready"] else f"~{_size(entry['download_bytes'])}: {entry['download_command']}"
        stdout.print(f"  {entry['model']} ({', '.join(entry['metrics'])}): {state}", markup=False)
    stdout.print("captioners (--src auto: the photo's caption as the source prompt):", markup=False)
    for entry in (e for e in report if e["kind"] == "captioner"):
        state = "on disk" if entry["ready"] else f"~{_size(entry['download_bytes'])}: {entry['download_command']}"
        stdout.print(f"  {entry['model']}: {state}", markup=False)
    stdout.print("preview decoders (--preview: fast, approximate images):", markup=False)
    for entry in (e for e in report if e["kind"] == "preview"):
        state = "on disk" if entry["ready"] else f"~{_size(entry['download_bytes'])}: {entry['download_command']}"
        stdout.print(f"  {entry['model']} ({entry['family']}): {state}", markup=False)


@command(
    help=(
        "Download what a model is missing: the base pipeline from the Hugging Face hub (only the files "
        "icdedit reads) and the iCD teacher and LoRAs from the official release; or an evaluation model "
        "(`icdedit eval`), the captioner (`--src auto`) or a preview decoder (`--preview`). Interrupted "
        "downloads resume when run again."
        "\n\nExamples:\n\n" + examples("icdedit download sd15-4step-v1", "icdedit download taesd")
    ),
    no_args_is_help=True,
)
def download(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="A name from `icdedit models`, or a model .yaml file.")],
    dtype: Annotated[str, typer.Option("--dtype", help="fp32 or fp16: which base weights to fetch.")] = "fp32",
    as_json: JsonOpt = False,
) -> None:
    if dtype not in ("fp32", "fp16"):
        raise UsageError(f"--dtype {dtype!r} is not fp32 or fp16", "use --dtype fp32 or --dtype fp16")
    with progress_bar(ctx, not as_json) as progress:
        result = catalog.run_download(catalog.DownloadRequest(model, dtype), reporter(ctx, progress))
    emit(result, as_json, [*result["placed"], *([result["base"]] if result.get("base") else [])] or ["nothing to do"])


@command(help="List the edit presets and their values.\n\nExample:\n\n" + examples("icdedit presets"))
def presets(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    from ..presets import builtin_presets, load_preset

    rows = {name: load_preset(name) for name in builtin_presets()}
    if as_json:  # the shape of every command's --json: one object naming the command
        listing = {n: {**s.as_dict(), "description": s.description} for n, s in rows.items()}
        emit({"command": "presets", "presets": listing}, True, [])
        return
    columns = {
        "guidance": "guidance",
        "tau": "tau",
        "cross_replace": "cross",
        "self_replace": "self",
        "amplify": "amplify",
        "blend_threshold": "blend",
        "mode": "mode",
        "method": "method",
    }
    table = Table(box=None, pad_edge=False)
    table.add_column("preset", no_wrap=True, style="bold")
    for header in columns.values():
        table.add_column(header, no_wrap=True)
    table.add_column("what it is for", overflow="fold")
    for name, settings in rows.items():
        values = [_preset_cell(settings, key) for key in columns]
        table.add_row(name, *values, settings.description)
    stdout.print(table)
    defaults = ", ".join(f"{f.edit_method} for {f.label}" for f in FAMILIES.values())
    stdout.print(f"method 'model's': the model's own edit method ({defaults})", markup=False)


def _preset_cell(settings, key: str) -> str:
    value = getattr(settings, key)
    if key == "method":
        return value or "model's"  # a preset that names no method leaves it to the model's family
    return value if isinstance(value, str) else f"{value:g}"
