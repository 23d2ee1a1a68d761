"""Options shared by several commands, defined once; help texts from the registries."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..families import FAMILIES
from ..presets import load_preset
from ..specs import DEFAULT_MODEL, known_model_names


# -- help texts from the registries (models, families, presets), never written out by hand --------
def per_family(value, attention_control_only: bool = False) -> str:
    """'512 for SD1.5, 1024 for SDXL': `value(family)` for every family (or for those that
    edit with attention control)."""
    families = [f for f in FAMILIES.values() if f.attention_control or not attention_control_only]
    return ", ".join(f"{value(family)} for {family.label}" for family in families)


def _preset_value(name: str, attention_control_only: bool = False) -> str:
    """A setting's value in each family's default preset, e.g. '19 for SD1.5, 7 for SDXL'."""
    return per_family(lambda f: f"{getattr(load_preset(f.default_preset), name):g}", attention_control_only)


MODELS_HELP = f"Model name ({', '.join(known_model_names())}) or a model .yaml file. Default: {DEFAULT_MODEL}."

# -- shared options, defined once ---------------------------------------------------------------
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help=MODELS_HELP,
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option("--seed", help="Seed of the inversion's start noise (drawn on the CPU: same result on every device)."),
]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N or mps.")]
DtypeOpt = Annotated[
    str,
    typer.Option(
        "--dtype",
        help=(
            "auto (fp16 on CUDA, fp32 on CPU), fp32, fp16, bf16, or fp64 (a slow reference precision to check others "
            "against)."
        ),
    ),
]
AttentionOpt = Annotated[
    str,
    typer.Option(
        "--attention",
        help=(
            "Fused attention kernel: auto (PyTorch SDPA; xformers if installed and measured faster on this GPU), sdpa "
            "or xformers."
        ),
    ),
]
SizeOpt = Annotated[
    Optional[int],
    typer.Option(
        "--size",
        help=(
            "Long side in pixels the photo is processed at (multiple of 64). Default: the model's "
            f"({per_family(lambda family: family.resolution)})."
        ),
    ),
]
OutOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Output file.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON line on stdout.")]
# edit settings (None: the preset's value), shared by `edit` and `batch`
GuidanceOpt = Annotated[
    Optional[float],
    typer.Option("--guidance", "-g", help=f"Target guidance scale (default preset: {_preset_value('guidance')})."),
]
TauOpt = Annotated[
    Optional[float],
    typer.Option("--tau", help=f"Dynamic guidance threshold (default preset: {_preset_value('tau')})."),
]
CrossOpt = Annotated[
    Optional[float],
    typer.Option(
        "--cross-replace",
        help="Fraction of steps with cross-attention replaced (Prompt-to-Prompt; default preset: "
        f"{_preset_value('cross_replace', attention_control_only=True)}).",
    ),
]
SelfOpt = Annotated[
    Optional[float],
    typer.Option(
        "--self-replace",
        help="Fraction of steps with self-attention injected (Prompt-to-Prompt; default preset: "
        f"{_preset_value('self_replace', attention_control_only=True)}).",
    ),
]
ModeOpt = Annotated[Optional[str], typer.Option("--mode", help="auto, replace (same word count) or refine.")]
BlendOpt = Annotated[
    Optional[tuple[str, str]],
    typer.Option(
        "--blend",
        metavar="SRCWORD TGTWORD",
        help=(
            "Local blend: the edit stays inside these words' region. Several words: quote them, e.g. --blend 'pug "
            "dog' 'bear'."
        ),
    ),
]
AmplifyOpt = Annotated[
    Optional[list[str]],
    typer.Option("--amplify", help="WORD=VALUE: scale a target word's attention (repeatable), or 'none'."),
]
