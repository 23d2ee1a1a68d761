"""The `icdedit` command line: thin commands over `icdedit.workflow` and the Editor.

Results (paths, figures, `--json`) go to stdout; logs, progress and hints to stderr. Errors
the user can fix are one line and exit code 1; usage errors exit 2; a traceback only with
`--debug` (or ICDEDIT_DEBUG=1).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from . import __version__, workflow
from .errors import IcdEditError, SettingsError, UsageError
from .families import FAMILIES
from .p2p.plan import parse_amplify_item
from .presets import load_preset
from .specs import DEFAULT_MODEL, known_model_names

stdout = Console(soft_wrap=True, highlight=False)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)

app = typer.Typer(
    name="icdedit",
    help=(
        "Edit real photos from text in about 7 network evaluations with Invertible Consistency "
        "Distillation (iCD).\n\n"
        "Example:\n\n"
        "  icdedit edit photo.jpg --src 'a photo of a pug' --tgt 'a photo of a bear'"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


# -- help texts from the registries (models, families, presets), never written out by hand --------
def _per_family(value, attention_control_only: bool = False) -> str:
    """'512 for SD1.5, 1024 for SDXL': `value(family)` for every family (or for those that
    edit with attention control)."""
    families = [f for f in FAMILIES.values() if f.attention_control or not attention_control_only]
    return ", ".join(f"{value(family)} for {family.label}" for family in families)


def _preset_value(name: str, attention_control_only: bool = False) -> str:
    """A setting's value in each family's default preset, e.g. '19 for SD1.5, 7 for SDXL'."""
    return _per_family(lambda f: f"{getattr(load_preset(f.default_preset), name):g}", attention_control_only)


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
            f"({_per_family(lambda family: family.resolution)})."
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


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or notes on stderr.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        stdout.print(f"icdedit {__version__}")
        raise typer.Exit()
    ctx.obj = {"debug": debug or os.environ.get("ICDEDIT_DEBUG", "") not in ("", "0"), "quiet": quiet}
    _configure_logging(quiet)


def _configure_logging(quiet: bool) -> None:
    logger = logging.getLogger("icdedit")
    logger.handlers[:] = [RichHandler(console=stderr, show_time=False, show_path=False)]
    logger.setLevel(logging.ERROR if quiet else logging.WARNING)
    logger.propagate = False
    for name in ("diffusers", "transformers"):  # their notes about our own loading are noise here
        logging.getLogger(name).setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from diffusers.utils import logging as dlog
        from transformers.utils import logging as tlog

        dlog.set_verbosity_error()
        tlog.set_verbosity_error()
        dlog.disable_progress_bar()
        tlog.disable_progress_bar()
    except ImportError:  # pragma: no cover - both are dependencies
        pass


def _options(ctx: typer.Context | None) -> dict:
    """The root options (--debug, --quiet), which every command receives through its context."""
    root = ctx.find_root() if ctx is not None else None
    return (root.obj if root is not None and isinstance(root.obj, dict) else None) or {"debug": False, "quiet": False}


def handles_errors(command):
    """Turn IcdEditError into one line on stderr and exit code 1 (tracebacks with --debug)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except IcdEditError as exc:
            if _options(kwargs.get("ctx"))["debug"]:
                raise
            problems = getattr(exc, "problems", None)
            if problems:  # a batch manifest: every bad row at once, one per line
                stderr.print(f"error: {len(problems)} problem(s) in the batch input; nothing was run", markup=False)
                for problem in problems:
                    stderr.print(f"  {problem}", markup=False)
            else:
                stderr.print(f"error: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""), markup=False)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            stderr.print("interrupted: nothing was written", markup=False)
            raise typer.Exit(130) from None

    return wrapper


def reporter(ctx: typer.Context, progress, interactive: bool = True) -> workflow.Reporter:
    """Progress and notes on stderr (silent with --quiet); questions only on a terminal."""
    quiet = _options(ctx)["quiet"]

    def confirm(question: str) -> bool:
        if not (interactive and sys.stdin.isatty() and stderr.is_terminal):
            return False
        progress.stop()
        return typer.confirm(question, default=False, err=True)

    return workflow.Reporter(progress, None if quiet else lambda message: stderr.print(message, markup=False), confirm)


class RateColumn(ProgressColumn):
    """Items per second (rich's own speed column counts bytes)."""

    def render(self, task):
        from rich.text import Text

        return Text(f"{task.speed:.2f} items/s" if task.speed else "", style="progress.data.speed")


@contextmanager
def progress_bar(ctx: typer.Context, enabled: bool, items: bool = False):
    """A rich progress bar on stderr, shown only on a terminal and not with --json/--quiet.
    For batches: count, rate and time left."""
    show = enabled and stderr.is_terminal and not _options(ctx)["quiet"]
    columns = [SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if items:
        columns += [RateColumn(), TimeRemainingColumn()]
    columns.append(TimeElapsedColumn())
    with Progress(*columns, console=stderr, transient=not items, disable=not show) as progress:
        yield progress


def emit(result: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        stdout.print(json.dumps(result, default=str), markup=False, soft_wrap=True)
    else:
        for line in lines:
            stdout.print(line, markup=False)


# -- commands --------------------------------------------------------------------------------------


@app.command(
    help=(
        "Invert a photo to a reusable noise latent (.safetensors) with the forward model.\n\n"
        "Example:\n\n  icdedit invert photo.jpg --prompt 'a photo of a pug' -o pug.safetensors"
    ),
    no_args_is_help=True,
)
@handles_errors
def invert(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="Photo to invert (JPEG, PNG, WebP, BMP, TIFF).")],
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="Text describing the photo.")],
    model: ModelOpt = None,
    seed: SeedOpt = 0,
    size: SizeOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: AttentionOpt = "auto",
    output: OutOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    started = time.perf_counter()
    request = workflow.InvertRequest(
        image, prompt, model, seed, size, device, dtype, output, overwrite, attention=attention
    )
    with progress_bar(ctx, not as_json) as progress:
        result = workflow.run_invert(request, reporter(ctx, progress))
    result["seconds"] = round(time.perf_counter() - started, 3)
    emit(result, as_json, [str(result["output"])])


@app.command(
    help=(
        "Invert and decode a photo (or decode a latent from `invert`) and measure how faithful "
        "the round trip is (PSNR, SSIM against the input).\n\n"
        "Example:\n\n  icdedit reconstruct photo.jpg --prompt 'a photo of a pug' -o pug-rec.png"
    ),
    no_args_is_help=True,
)
@handles_errors
def reconstruct(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(metavar="IMAGE|LATENT", help="A photo, or a .safetensors latent from `icdedit invert`.")
    ],
    prompt: Annotated[
        Optional[str],
        typer.Option("--prompt", "-p", help="Text describing the photo (a latent file's own prompt by default)."),
    ] = None,
    model: ModelOpt = None,
    seed: SeedOpt = 0,
    guidance: Annotated[
        float, typer.Option("--guidance", "-g", help="Guidance scale while decoding (0: the editing source branch).")
    ] = 0.0,
    tau: Annotated[float, typer.Option("--tau", help="Dynamic guidance: on for t/1000 <= tau.")] = 0.8,
    size: SizeOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: AttentionOpt = "auto",
    output: OutOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    started = time.perf_counter()
    request = workflow.ReconstructRequest(
        source, prompt, model, seed, guidance, tau, size, device, dtype, output, overwrite, attention=attention
    )
    with progress_bar(ctx, not as_json) as progress:
        result = workflow.run_reconstruct(request, reporter(ctx, progress))
    result["seconds"] = round(time.perf_counter() - started, 3)
    lines = [str(result["output"])]
    if "psnr" in result:
        lines.append(f"PSNR {result['psnr']:.2f} dB  SSIM {result['ssim']:.4f}")
    emit(result, as_json, lines)


def _parse_blend(value: tuple[str, str] | None) -> list[tuple[str, str]] | None:
    """('pug dog', 'bear') -> every source word paired with every target word."""
    if not value:
        return None
    sources, targets = value[0].split(), value[1].split()
    if not sources or not targets:
        raise SettingsError("--blend needs a source word and a target word", "e.g. --blend pug bear")
    return [(s, t) for s in sources for t in targets]


def _parse_amplify(values: list[str] | None) -> list[tuple[str, float]] | None:
    if not values:
        return None
    if len(values) == 1 and values[0].strip().lower() == "none":
        return []
    try:
        return [parse_amplify_item(item) for item in values]
    except ValueError as exc:
        raise UsageError(f"--{exc}", "e.g. --amplify bear=4, or --amplify none") from None


@app.command(
    help=(
        "Edit a photo: invert it with the source prompt, then decode source and target(s) "
        "together with Prompt-to-Prompt attention control and dynamic guidance.\n\n"
        "Example:\n\n  icdedit edit pug.jpg --src 'a photo of a pug' --tgt 'a photo of a bear'\n\n"
        "Replace mode (same word count) amplifies and blends the words that differ; refine mode "
        "amplifies the target's new words. What was derived is printed; --blend / --amplify "
        "override it, --no-blend / --amplify none turn it off.\n\n"
        "SDXL models (-m sdxl-4step-v2) edit as the official SDXL code does: the target prompt "
        "alone, the source prompt's embeddings in the noisiest steps; only --guidance and --tau apply."
    ),
    no_args_is_help=True,
)
@handles_errors
def edit(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(metavar="IMAGE|LATENT", help="A photo, or a .safetensors latent from `icdedit invert`.")
    ],
    tgt: Annotated[
        list[str], typer.Option("--tgt", "-t", help="Target prompt; repeat for several edits of one inversion.")
    ],
    src: Annotated[
        Optional[str],
        typer.Option("--src", "-s", help="Source prompt describing the photo (a latent file's own prompt by default)."),
    ] = None,
    model: ModelOpt = None,
    preset: Annotated[
        Optional[str],
        typer.Option(
            "--preset",
            help=(
                "Preset name (see `icdedit presets`) or .yaml file. Default: the model's "
                f"({_per_family(lambda family: family.default_preset)})."
            ),
        ),
    ] = None,
    seed: SeedOpt = 0,
    guidance: GuidanceOpt = None,
    tau: TauOpt = None,
    cross_replace: CrossOpt = None,
    self_replace: SelfOpt = None,
    mode: ModeOpt = None,
    blend: BlendOpt = None,
    no_blend: Annotated[bool, typer.Option("--no-blend", help="Do not derive a local blend.")] = False,
    amplify: AmplifyOpt = None,
    save_latent: Annotated[
        Optional[Path], typer.Option("--save-latent", help="Also write the final latents (rows: source, then targets).")
    ] = None,
    side_by_side: Annotated[
        bool, typer.Option("--side-by-side", help="Also write original | edit(s) in one image.")
    ] = False,
    size: SizeOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: AttentionOpt = "auto",
    output: OutOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    started = time.perf_counter()
    request = workflow.EditRequest(
        source=source,
        targets=list(tgt),
        src=src,
        model=model,
        preset=preset,
        seed=seed,
        overrides=dict(guidance=guidance, tau=tau, cross_replace=cross_replace, self_replace=self_replace, mode=mode),
        blend=_parse_blend(blend),
        no_blend=no_blend,
        amplify=_parse_amplify(amplify),
        save_latent=save_latent,
        side_by_side=side_by_side,
        size=size,
        device=device,
        dtype=dtype,
        attention=attention,
        output=output,
        overwrite=overwrite,
    )
    with progress_bar(ctx, not as_json) as progress:
        result = workflow.run_edit(request, reporter(ctx, progress))
    result["seconds"] = round(time.perf_counter() - started, 3)
    lines = [str(p) for p in result["outputs"]]
    lines += [str(result[k]) for k in ("side_by_side", "latent") if result.get(k)]
    emit(result, as_json, lines)


@app.command(
    help=(
        "Edit many photos with one model load: a manifest (CSV, TSV, JSONL, YAML; the PIE-Bench "
        "editing CSV as it is) or images (folders, globs, paths) with --src/--tgt for each. "
        "Re-running skips what is done; a bad item is recorded and the rest go on. Exit code: 0 "
        "all done, 1 some items failed, 2 unusable input.\n\n"
        "Example:\n\n  icdedit batch edits.csv --images photos/ --out edited/"
    ),
    no_args_is_help=True,
)
@handles_errors
def batch(
    ctx: typer.Context,
    inputs: Annotated[
        list[str],
        typer.Argument(metavar="MANIFEST|IMAGES...", help="A manifest file, or image files, folders and globs."),
    ],
    images: Annotated[
        Optional[Path],
        typer.Option(
            "--images", help="Folder that a manifest's image paths are relative to (default: the manifest's folder)."
        ),
    ] = None,
    src: Annotated[Optional[str], typer.Option("--src", "-s", help="Source prompt for every item without one.")] = None,
    tgt: Annotated[Optional[str], typer.Option("--tgt", "-t", help="Target prompt for every item without one.")] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder (created); results.jsonl goes there too.")] = Path(
        "edits"
    ),
    model: ModelOpt = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Preset for rows without their own.")] = None,
    seed: SeedOpt = 0,
    guidance: GuidanceOpt = None,
    tau: TauOpt = None,
    cross_replace: CrossOpt = None,
    self_replace: SelfOpt = None,
    mode: ModeOpt = None,
    blend: BlendOpt = None,
    amplify: AmplifyOpt = None,
    bad_blend: Annotated[
        str,
        typer.Option(
            "--bad-blend",
            metavar="fail|ignore",
            help=(
                "A row whose blend cannot be used (unparsable, or a word not in its prompt): fail it (default), or "
                "edit it without local blend and record a warning. The official script edits such rows with an empty "
                "blend mask, which leaves them unedited."
            ),
        ),
    ] = "fail",
    shard: Annotated[
        Optional[str],
        typer.Option(
            "--shard",
            help=(
                "K/N: process only the K-th of N deterministic parts (1-based). Under torchrun/accelerate the rank's "
                "part is taken automatically."
            ),
        ),
    ] = None,
    side_by_side: Annotated[
        bool, typer.Option("--side-by-side", help="Also write original | edit for each item.")
    ] = False,
    size: SizeOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: AttentionOpt = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo items that are already done.")] = False,
    cuda_graphs: Annotated[
        bool,
        typer.Option(
            "--cuda-graphs",
            help=(
                "Capture the UNet as CUDA graphs on the first item and replay them (CUDA only; 2-3x faster per item "
                "on an H100)."
            ),
        ),
    ] = False,
    compile: Annotated[
        bool,
        typer.Option(
            "--compile",
            help=(
                "torch.compile the UNet's attention-free parts and the VAE: the first item of each size pays minutes "
                "of compilation, later ones run faster. Combines with --cuda-graphs."
            ),
        ),
    ] = False,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            help=(
                "Photos of one processing size edited per UNet batch (a batch that does not fit in memory falls back "
                "to one by one)."
            ),
        ),
    ] = 1,
    as_json: JsonOpt = False,
) -> None:
    request = workflow.BatchRequest(
        inputs=inputs,
        images=images,
        out=out,
        model=model,
        device=device,
        dtype=dtype,
        attention=attention,
        size=size,
        shard=shard,
        overwrite=overwrite,
        side_by_side=side_by_side,
        cuda_graphs=cuda_graphs,
        compile=compile,
        batch_size=batch_size,
        defaults=dict(
            src=src,
            tgt=tgt,
            preset=preset,
            seed=seed,
            blend=_parse_blend(blend),
            amplify=_parse_amplify(amplify),
            bad_blend=bad_blend,
            overrides=dict(
                guidance=guidance, tau=tau, cross_replace=cross_replace, self_replace=self_replace, mode=mode
            ),
        ),
    )
    with progress_bar(ctx, not as_json, items=True) as progress:
        summary, report = workflow.run_batch(request, reporter(ctx, progress))
    result = {"command": "batch", "report": str(report), **summary.as_dict()}
    if as_json:
        stdout.print(json.dumps(result), markup=False)
    else:
        table = Table("done", "skipped", "failed", "seconds per item", box=None)
        per_item = summary.as_dict()["seconds_per_item"]
        table.add_row(
            str(len(summary.done)),
            str(len(summary.skipped)),
            str(len(summary.failed)),
            "-" if per_item is None else f"{per_item:.2f}",
        )
        stdout.print(table)
        for number, reason in summary.failed.items():
            stdout.print(f"failed: item {number}: {reason}", markup=False)
        stdout.print(f"report: {report}", markup=False)
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


@app.command(help="Show the known models and which of their parts are on disk.\n\nExample:\n\n  icdedit models")
@handles_errors
def models(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    report = workflow.models_report()
    if as_json:
        stdout.print(json.dumps(report), markup=False)
        return
    table = Table(box=None, pad_edge=False)
    for column in ("model", "part", "on disk", "size", "path"):
        table.add_column(column, overflow="fold", no_wrap=column != "path")
    for entry in report:
        for i, part in enumerate(entry["parts"]):
            table.add_row(
                entry["model"] if i == 0 else "",
                part["part"],
                "yes" if part["present"] else "no",
                _size(part["size_bytes"]) if part["present"] else f"~{_size(part['size_bytes'])}",
                part["location"],
            )
    stdout.print(table)
    for entry in report:
        if not entry["ready"]:
            stdout.print(
                f"{entry['model']}: about {_size(entry['download_bytes'])} to download: {entry['download_command']}",
                markup=False,
            )
    stdout.print(
        "tiny, tiny-xl: built locally on first use (--model tiny / tiny-xl), nothing to download", markup=False
    )


@app.command(
    help=(
        "Download what a model is missing: the base pipeline from the Hugging Face hub (only the files "
        "icdedit reads) and the iCD teacher and LoRAs from the official release. Interrupted downloads "
        "resume when run again.\n\nExample:\n\n  icdedit download sd15-4step-v1"
    ),
    no_args_is_help=True,
)
@handles_errors
def download(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name or model .yaml file.")],
    dtype: Annotated[str, typer.Option("--dtype", help="fp32 or fp16: which base weights to fetch.")] = "fp32",
    as_json: JsonOpt = False,
) -> None:
    if dtype not in ("fp32", "fp16"):
        raise SettingsError(f"--dtype {dtype!r} is not fp32 or fp16")
    with progress_bar(ctx, not as_json) as progress:
        result = workflow.run_download(workflow.DownloadRequest(model, dtype), reporter(ctx, progress))
    emit(result, as_json, [*result["placed"], *([result["base"]] if result.get("base") else [])] or ["nothing to do"])


@app.command(help="List the edit presets and their values.\n\nExample:\n\n  icdedit presets")
@handles_errors
def presets(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    from .presets import builtin_presets, load_preset

    rows = {name: load_preset(name) for name in builtin_presets()}
    if as_json:
        stdout.print(
            json.dumps({n: {**s.as_dict(), "description": s.description} for n, s in rows.items()}), markup=False
        )
        return
    columns = {
        "guidance": "guidance",
        "tau": "tau",
        "cross_replace": "cross",
        "self_replace": "self",
        "amplify": "amplify",
        "blend_threshold": "blend",
        "mode": "mode",
    }
    table = Table(box=None, pad_edge=False)
    table.add_column("preset", no_wrap=True, style="bold")
    for header in columns.values():
        table.add_column(header, no_wrap=True)
    table.add_column("what it is for", overflow="fold")
    for name, settings in rows.items():
        values = [f"{getattr(settings, k):g}" if k != "mode" else settings.mode for k in columns]
        table.add_row(name, *values, settings.description)
    stdout.print(table)


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
