"""Options shared by several commands, defined once; help texts from the registries."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import click
import typer

from .. import metrics as metric_table
from ..errors import SettingsError, UsageError
from ..families import FAMILIES
from ..methods import EDIT_METHODS
from ..presets import load_preset
from ..specs import DEFAULT_MODEL, known_model_names

if TYPE_CHECKING:
    from ..run_context import RunOptions

# Only light registries are imported here: `icdedit --help`, usage errors, `presets` and `models`
# answer without torch. What runs a model is imported inside the functions that need it.


# -- help texts from the registries (models, families, presets), never written out by hand --------
def per_family(value) -> str:
    """'512 for SD1.5, 1024 for SDXL': `value(family)` for every family."""
    return ", ".join(f"{value(family)} for {family.label}" for family in FAMILIES.values())


def _preset_value(name: str) -> str:
    """A setting's value in each family's default preset, e.g. '19 for SD1.5, 7 for SDXL'."""
    return per_family(lambda f: f"{getattr(load_preset(f.default_preset), name):g}")


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
RANDOM_SEED = "random"


def parse_seed_flag(value) -> int:
    """--seed N, or --seed random: a fresh seed from the operating system's randomness, told on
    stderr (and in every output's record and --json report, which carry the seed)."""
    import secrets

    from ..presets import SEED_MAX

    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = str(value).strip()
    if text.lower() == RANDOM_SEED:
        seed = secrets.randbelow(SEED_MAX + 1)
        root = click.get_current_context(silent=True)
        options = root.find_root().obj if root is not None else None
        if not (isinstance(options, dict) and options.get("quiet")):
            typer.echo(f"note: --seed random drew seed {seed}", err=True)
        return seed
    try:
        return int(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a whole number or 'random'", param_hint="'--seed'") from None


SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed",
        metavar="INTEGER|random",
        parser=parse_seed_flag,
        help=(
            "Seed of the inversion's random draws: the start noise, and for SDXL first the VAE posterior sample "
            "(drawn on the CPU: the same draws on every device). random: a fresh seed, printed and recorded."
        ),
    ),
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
            "Size in pixels the photo is processed at, a multiple of 64: "
            f"{per_family(lambda f: 'the side of a square of its area' if f.size_by_area else 'its long side')}"
            f" (aspect ratio kept). Default: the model's ({per_family(lambda family: family.resolution)})."
        ),
    ),
]
OutOpt = Annotated[Optional[Path], typer.Option("--output", "-o", help="Output file.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one machine-readable JSON line on stdout.")]
PreviewOpt = Annotated[
    bool,
    typer.Option(
        "--preview",
        help=(
            "Decode with TAESD, a tiny distilled decoder: much faster than the VAE's, but approximate: for trying "
            "prompts and settings, not for final images. Fetch it once: icdedit download taesd (taesdxl for SDXL)."
        ),
    ),
]
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
        f"{_preset_value('cross_replace')}).",
    ),
]
SelfOpt = Annotated[
    Optional[float],
    typer.Option(
        "--self-replace",
        help="Fraction of steps with self-attention injected (Prompt-to-Prompt; default preset: "
        f"{_preset_value('self_replace')}).",
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
    typer.Option(
        "--amplify",
        help=(
            "WORD=VALUE: scale a target word's attention (repeatable); a plain VALUE: the factor of the derived words; "
            "or 'none'."
        ),
    ),
]
MethodOpt = Annotated[
    Optional[str],
    typer.Option(
        "--method",
        help=(
            "Edit method: "
            + "; ".join(f"{name}: {meaning}" for name, meaning in EDIT_METHODS.items())
            + f". Default: the model's ({per_family(lambda family: family.edit_method)})."
        ),
    ),
]
AmplifyPromptOpt = Annotated[
    Optional[str],
    typer.Option(
        "--amplify-prompt",
        help=(
            "The prompt switch's prompt for the unguided high-noise steps: source (default: faithful, the official "
            "README's), target (stronger edits: each target's own prompt throughout), or a prompt in words."
        ),
    ),
]
CudaGraphsOpt = Annotated[
    bool,
    typer.Option(
        "--cuda-graphs",
        help=(
            "Capture UNet evaluations as CUDA graphs on first use and replay them (CUDA only; 2-3x faster per edit on "
            "an H100 once captured; exact)."
        ),
    ),
]
CompileOpt = Annotated[
    bool,
    typer.Option(
        "--compile",
        help=(
            "torch.compile the UNet's attention-free parts and the VAE: the first run of each size pays minutes of "
            "compilation (kept for later runs), later ones run faster. Combines with --cuda-graphs."
        ),
    ),
]

OfflineOpt = Annotated[
    bool,
    typer.Option(
        "--offline",
        help=(
            "Never download: fail, naming every missing weight file, instead of fetching it on first use (as "
            "HF_HUB_OFFLINE=1 does)."
        ),
    ),
]


EngineOpt = Annotated[
    Optional[str],
    typer.Option(
        "--engine",
        metavar="local|ray",
        help=(
            "local (default): this process. ray: every item on Ray Data actors, on this machine or a Ray cluster "
            "(pip install 'icdedit[ray]'; README 'More than one machine'): the same outputs and results.jsonl."
        ),
    ),
]
AddressOpt = Annotated[
    Optional[str],
    typer.Option(
        "--address",
        help="With --engine ray: the Ray cluster (default: RAY_ADDRESS, else the one running here, else a new "
        "local Ray); 'local' starts a Ray for this run even when a cluster runs.",
    ),
]
WorkersOpt = Annotated[
    Optional[int],
    typer.Option(
        "--workers",
        min=1,
        help="With --engine ray: actors, each with the model loaded once (default: one per GPU of the cluster, or 1).",
    ),
]
GpusPerWorkerOpt = Annotated[
    Optional[float],
    typer.Option(
        "--gpus-per-worker",
        min=0,
        help="With --engine ray: GPUs each actor takes (default: 1 where the cluster has GPUs, 0 on the CPU).",
    ),
]


def engine_options(engine: str | None, address: str | None, workers: int | None, gpus_per_worker: float | None):
    """--engine and the Ray flags as one value (checked when the run is planned)."""
    from ..ray_engine import EngineOptions

    return EngineOptions(engine or "local", address, workers, gpus_per_worker)


def run_options(
    device: str, dtype: str, attention: str, cuda_graphs: bool, compile: bool, preview: bool, offline: bool = False
) -> RunOptions:
    """The run flags every model-running command takes (--device, --dtype, --attention,
    --cuda-graphs, --compile, --preview, --offline), as one value."""
    from ..run_context import RunOptions

    return RunOptions(device, dtype, attention, cuda_graphs, compile, preview, offline)


def parse_blend_flag(value: tuple[str, str] | None) -> list[tuple[str, str]] | None:
    """--blend 'pug dog' bear -> every source word paired with every target word."""
    if not value:
        return None
    if not value[0].split() or not value[1].split():
        raise SettingsError("--blend needs a source word and a target word", "e.g. --blend pug bear")
    from ..word_args import parse_blend

    return parse_blend(tuple(value))


def parse_amplify_flag(values: list[str] | None) -> tuple[list[tuple[str, float]] | None, float | None]:
    """--amplify WORD=VALUE (repeatable), 'none', or one factor for the derived words."""
    from ..word_args import parse_amplify_values

    try:
        return parse_amplify_values(values)
    except ValueError as exc:
        raise UsageError(
            f"--{exc}", "e.g. --amplify bear=4, --amplify 4 (the derived words), or --amplify none"
        ) from None


# -- metric help lists (edit --score/--pick), from the metric table (icdedit.metrics) -------------
SCORE_HELP = (
    f"With --grid: score every cell against the photo with `icdedit eval`'s metrics (comma-separated, from "
    f"{', '.join(m for m in metric_table.METRICS if not metric_table.TABLE[m].needs_mask)}) and print the cells "
    "ranked."
)
PICK_HELP = (
    f"With --grid: write the best cell as -o: the highest METRIC (lowest for {metric_table.distances()}) among the "
    "cells within every bound, e.g. --pick clip_whole,structure<0.05."
)
ScoreOpt = Annotated[Optional[str], typer.Option("--score", metavar="METRICS", help=SCORE_HELP)]
PickOpt = Annotated[Optional[str], typer.Option("--pick", metavar="METRIC[,OTHER<BOUND]...", help=PICK_HELP)]


# -- the paper's protocol (issue 25): word rules, a plan without a model ---------------------------
CaptionerOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--captioner",
        metavar="DIR",
        help=(
            "For a source prompt 'auto': the captioning model's folder (BLIP, the hub layout). Default: blip-large in "
            "the weights folder (icdedit download blip-large; fetched on first use unless --offline)."
        ),
    ),
]
SwapOpt = Annotated[
    Optional[list[str]],
    typer.Option(
        "--swap",
        metavar="OLD=NEW",
        help=(
            "The target is the source prompt with the word OLD replaced by NEW (whole words; repeat for more). "
            "Instead of --tgt: with --src auto no prompt is written at all."
        ),
    ),
]
WordsOpt = Annotated[
    Optional[str],
    typer.Option(
        "--words",
        metavar="auto|official",
        help=(
            "How Prompt-to-Prompt's words are chosen when not given: auto (icdedit's derivation) or official (the "
            "official launcher's rules exactly: blend only from the blend cell, the target's new words less NLTK's "
            "stop words amplified, replace mode when the word counts match). --preset paper sets official."
        ),
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help=(
            "Read and check everything and print each edit's resolved plan (settings, mode, blend and amplified "
            "words, outputs, problems) without loading any model or writing anything; exit code 1 when an item has "
            "a problem."
        ),
    ),
]
OptionalSeedOpt = Annotated[
    Optional[int],
    typer.Option(
        "--seed",
        metavar="INTEGER|random",
        parser=parse_seed_flag,
        help=(
            "Seed of the inversion's random draws: the start noise, and for SDXL first the VAE posterior sample. "
            "random: a fresh seed, printed and recorded. "
            "Default: the preset's seed (paper: 30; paper-xl: each row's index), else 0."
        ),
    ),
]
