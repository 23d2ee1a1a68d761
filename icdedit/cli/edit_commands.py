"""The editing commands: invert, reconstruct, edit and batch, thin over `icdedit.workflow`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from .. import workflow
from ..errors import SettingsError, UsageError
from ..grid import GRID_KEYS
from ..p2p.plan import parse_amplify_item
from .app import app, emit, handles_errors, progress_bar, reporter, stdout
from .options import (
    AmplifyOpt,
    AmplifyPromptOpt,
    AttentionOpt,
    BlendOpt,
    CrossOpt,
    DeviceOpt,
    DtypeOpt,
    GuidanceOpt,
    JsonOpt,
    MethodOpt,
    ModelOpt,
    ModeOpt,
    OutOpt,
    OverwriteOpt,
    PreviewOpt,
    SeedOpt,
    SelfOpt,
    SizeOpt,
    TauOpt,
    per_family,
)

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
        Optional[float],
        typer.Option(
            "--guidance",
            "-g",
            help="Guidance scale while decoding. Default: 0 (the editing source branch); a generated noise file's own.",
        ),
    ] = None,
    tau: Annotated[
        Optional[float],
        typer.Option(
            "--tau", help="Dynamic guidance: on for t/1000 <= tau. Default: 0.8; a generated noise file's own."
        ),
    ] = None,
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


def _ranking_lines(result: dict) -> list[str]:
    """The scored grid cells, best first, one line each, and the picked one."""
    by_output = {cell["output"]: cell for cell in result["grid"]}
    lines = [f"ranked by {result['ranked_by']}:"]
    for place, output in enumerate(result["ranking"], start=1):
        scores = "  ".join(f"{k} {'-' if v is None else f'{v:.4g}'}" for k, v in by_output[output]["scores"].items())
        lines.append(f"  {place}. {output}  {scores}")
    if result.get("picked"):
        lines.append(f"picked: {result['picked_cell']} -> {result['picked']}")
    return lines


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
        "SDXL models (-m sdxl-4step-v2) edit as the official SDXL code does, with the prompt switch: "
        "the target prompt, with the --amplify-prompt's embeddings (the source's by default) in the "
        "unguided high-noise steps. --method p2p edits SDXL with Prompt-to-Prompt instead, "
        "--method p2p+switch with both:\n\n"
        "  icdedit edit bird.jpg -m sdxl-4step-v2 --src 'a bird on a branch' --tgt 'a robotic bird on a branch' "
        "--method p2p\n\n"
        "Try settings from one inversion with --grid (a contact sheet and one image per cell):\n\n"
        "  icdedit edit cat.jpg -s 'a photo of a cat' -t 'a photo of a tiger' "
        "--grid cross_replace=0.2,0.4,0.6 --grid self_replace=0.4,0.6,0.8\n\n"
        "Keep the edit inside a region (white in the mask image):\n\n"
        "  icdedit edit cat.jpg -s 'a photo of a cat' -t 'a photo of a tiger' --mask cat-mask.png --mask-feather 4\n\n"
        "Look quickly, keep later: --preview decodes with TAESD (fast, approximate; icdedit download taesd once):\n\n"
        "  icdedit edit cat.jpg -s 'a photo of a cat' -t 'a photo of a tiger' --grid guidance=10,15,19 --preview"
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
                f"({per_family(lambda family: family.default_preset)})."
            ),
        ),
    ] = None,
    seed: SeedOpt = 0,
    guidance: GuidanceOpt = None,
    tau: TauOpt = None,
    cross_replace: CrossOpt = None,
    self_replace: SelfOpt = None,
    mode: ModeOpt = None,
    method: MethodOpt = None,
    amplify_prompt: AmplifyPromptOpt = None,
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
    grid: Annotated[
        Optional[list[str]],
        typer.Option(
            "--grid",
            metavar="KEY=V1,V2,...",
            help=(
                f"Try settings: every combination of the values (repeat for more keys: {', '.join(GRID_KEYS)}), "
                "decoded from one inversion as rows of one batch. Writes each cell (names carry the settings) and a "
                "labelled contact sheet (-o's stem + '-grid-KEYS'), first key as columns."
            ),
        ),
    ] = None,
    mask: Annotated[
        Optional[Path],
        typer.Option(
            "--mask",
            help=(
                "An image, white where the edit may change the photo (any size and mode; stretched to the photo). "
                "Outside it every target equals the source row exactly, in latent space at every step and in the "
                "image; with local blend the edit stays inside both (the mask bounds the blend). Works with every "
                "method, SDXL's prompt switch included."
            ),
        ),
    ] = None,
    mask_feather: Annotated[
        float, typer.Option("--mask-feather", help="Blur the mask's edge by this radius, in the photo's pixels.")
    ] = 0.0,
    score: Annotated[
        Optional[str],
        typer.Option(
            "--score",
            metavar="METRICS",
            help="With --grid: score every cell against the photo with `icdedit eval`'s metrics (comma-separated) "
            "and print the cells ranked.",
        ),
    ] = None,
    pick: Annotated[
        Optional[str],
        typer.Option(
            "--pick",
            metavar="METRIC[,OTHER<BOUND]...",
            help="With --grid: write the best cell as -o: the highest METRIC (lowest for structure, lpips, mse) "
            "among the cells within every bound, e.g. --pick clip_whole,structure<0.05.",
        ),
    ] = None,
    preview: PreviewOpt = False,
    as_json: JsonOpt = False,
) -> None:
    started = time.perf_counter()
    if (score or pick) and not grid:
        raise UsageError("--score and --pick are for --grid", "add --grid KEY=V1,V2,...")
    request = workflow.EditRequest(
        source=source,
        targets=list(tgt),
        src=src,
        model=model,
        preset=preset,
        seed=seed,
        overrides=dict(
            guidance=guidance,
            tau=tau,
            cross_replace=cross_replace,
            self_replace=self_replace,
            mode=mode,
            method=method,
            amplify_prompt=amplify_prompt,
        ),
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
        grid=tuple(grid or ()),
        mask=mask,
        mask_feather=mask_feather,
        score=tuple(n.strip() for n in (score or "").split(",") if n.strip()),
        pick=pick,
        preview=preview,
    )
    run = workflow.run_edit_grid if request.grid else workflow.run_edit
    with progress_bar(ctx, not as_json) as progress:
        result = run(request, reporter(ctx, progress))
    result["seconds"] = round(time.perf_counter() - started, 3)
    lines = [str(p) for p in result["outputs"]] + ([f"sheet: {result['sheet']}"] if "sheet" in result else [])
    if "ranking" in result and not as_json:
        lines += _ranking_lines(result)
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
    method: MethodOpt = None,
    amplify_prompt: AmplifyPromptOpt = None,
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
    grid: Annotated[
        Optional[list[str]],
        typer.Option(
            "--grid",
            metavar="KEY=V1,V2,...",
            help=(
                "Edit every item once per combination of the values (as `edit --grid`), each cell's outputs in a "
                "folder named by its settings; a photo's cells are decoded together from one inversion. Score "
                "them with `icdedit eval`."
            ),
        ),
    ] = None,
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
        grid=tuple(grid or ()),
        defaults=dict(
            src=src,
            tgt=tgt,
            preset=preset,
            seed=seed,
            blend=_parse_blend(blend),
            amplify=_parse_amplify(amplify),
            bad_blend=bad_blend,
            overrides=dict(
                guidance=guidance,
                tau=tau,
                cross_replace=cross_replace,
                self_replace=self_replace,
                mode=mode,
                method=method,
                amplify_prompt=amplify_prompt,
            ),
        ),
    )
    with progress_bar(ctx, not as_json, items=True) as progress:
        summary, report = workflow.run_batch(request, reporter(ctx, progress))
    print_batch_summary("batch", summary, report, as_json)


def print_batch_summary(command: str, summary, report: Path, as_json: bool) -> None:
    """A run over many items: a table (or --json), each failure, the report; exit 1 on failures."""
    result = {"command": command, "report": str(report), **summary.as_dict()}
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
