"""`icdedit info`: the record an output carries (records.py) and the command that makes it again."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import command, emit, examples
from .options import JsonOpt


@command(
    help=(
        "Show how an image or latent file was made: the record written into every output "
        "(model, prompts, seed, every setting as used, the source photo and a hash of its pixels) "
        "and the command that makes it again.\n\n"
        "Examples:\n\n"
        + examples("icdedit info chelsea-a-photo-of-a-tiger.png", "icdedit info chelsea-a-photo-of-a-tiger.png --json")
    ),
    no_args_is_help=True,
)
def info(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="An image or .safetensors file icdedit wrote.")],
    as_json: JsonOpt = False,
) -> None:
    from ..records import read_record, reproduce_command, shell_line

    record = read_record(file)
    result = {"file": str(file), "record": record}
    try:
        result["reproduce"] = shell_line(reproduce_command(record))
    except (AttributeError, KeyError, TypeError, ValueError):  # an older or partial record: shown, not repeated
        result["reproduce"] = None
    emit(result, as_json, [*_lines(record), f"reproduce: {result['reproduce'] or '(not recorded well enough)'}"])


def _lines(record: dict, indent: str = "") -> list[str]:
    """The record as `key: value` lines, nested objects indented under their key."""
    lines = []
    for key, value in record.items():
        if isinstance(value, dict) and value:
            lines.append(f"{indent}{key}:")
            lines += _lines(value, indent + "  ")
        else:
            lines.append(f"{indent}{key}: {_shown(value)}")
    return lines


def _shown(value) -> str:
    if isinstance(value, list):
        return ", ".join(_shown(v) for v in value) if value else "-"
    if isinstance(value, float):
        return f"{value:g}"
    return "-" if value is None or value == {} else str(value)
