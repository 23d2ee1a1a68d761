"""The editing commands: invert, reconstruct, edit and batch, thin over `icdedit.workflow`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..grid import GRID_KEYS
from .app import command, emit, examples, progress_bar, reporter
from .options import (
    AmplifyOpt,
    AmplifyPromptOpt,
    AttentionOpt,
    BlendOpt,
    CaptionerOpt,
    CompileOpt,
    CrossOpt,
    CudaGraphsOpt,
    DeviceOpt,
    DryRunOpt,
    DtypeOpt,
    GuidanceOpt,
    JsonOpt,
    MethodOpt,
    ModelOpt,
    ModeOpt,
    OfflineOpt,
    OptionalSeedOpt,
    OutOpt,
    OverwriteOpt,
    PickOpt,
    PreviewOpt,
    ScoreOpt,
    SeedOpt,
    SelfOpt,
    SizeOpt,
    SwapOpt,
    TauOpt,
    WordsOpt,
    parse_amplify_flag,
    parse_blend_flag,
    per_family,
    run_options,
)

CAT = "examples/chelsea.jpg -s 'a photo of a cat' -t 'a photo of a tiger'"  # the help's examples' photo

# -- commands --------------------------------------------------------------------------------------


@command(
    help=(
        "Invert a photo to a reusable noise latent (.safetensors) with the forward model.\n\n"
        "Example:\n\n"
        + examples("icdedit invert examples/chelsea.jpg --prompt 'a photo of a cat' -o chelsea.safetensors")
    ),
    no_args_is_help=True,
)
def invert(
    ctx: typer.Context,
    image: Annotated[Path, typer.Argument(help="Photo to invert (JPEG, PNG, WebP, BMP, TIFF).")],
    prompt: Annotated[
        str, typer.Option("--prompt", "-p", help="Text describing the photo; 'auto': its caption (--captioner).")
    ],
    model: ModelOpt = None,
    seed: SeedOpt = 0,
    size: SizeOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: AttentionOpt = "auto",
    cuda_graphs: CudaGraphsOpt = False,
    compile: CompileOpt = False,
    preview: PreviewOpt = False,
    offline: OfflineOpt = False,
    output: OutOpt = None,
    overwrite: OverwriteOpt = False,
    captioner: CaptionerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    from .. import workflow

    started = time.perf_counter()
    run = run_options(device, dtype, attention, cuda_graphs, compile, preview, offline)
    request = workflow.InvertRequest(image, prompt, model, seed, size, output, overwrite, run, captioner)
    with progress_bar(ctx, not as_json) as progress:
        result = workflow.run_invert(request, reporter(ctx, progress))
    result["seconds"] = round(time.perf_counter() - started, 3)
    emit(result, as_json, [str(result["output"])])


@command(
    help=(
        "Invert and decode a photo (or decode a latent from `invert`) and measure how faithful "
        "the round trip is (PSNR, SSIM against the input).\n\n"
        "Examples:\n\n"
        + examples(
            "icdedit reconstruct examples/chelsea.jpg --prompt 'a photo of a cat' -o chelsea-rec.png",
            "icdedit reconstruct chelsea.safetensors -o chelsea-rec.png   # a latent from invert: its own prompt",
        )
    ),
    no_args_is_help=True,
)
def reconstruct(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(metavar="IMAGE|LATENT", help="A photo, or a .safetensors latent from `icdedit invert`.")
    ],
    prompt: Annotated[
        Optional[str],
        typer.Option(
            "--prompt",
            "-p",
            help="Text describing the photo (a latent file's own prompt by default); 'auto': its caption.",
        ),
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
    cuda_graphs: CudaGraphsOpt = False,
    compile: CompileOpt = False,
    preview: PreviewOpt = False,
    offline: OfflineOpt = False,
    output: OutOpt = None,
    overwrite: OverwriteOpt = False,
    captioner: CaptionerOpt = None,
    as_json: JsonOpt = False,
) -> None:
    from .. import workflow

    started = time.perf_counter()
    run = run_options(device, dtype, attention, cuda_graphs, compile, preview, offline)
    request = workflow.ReconstructRequest(
        source, prompt, model, seed, guidance, tau, size, output, overwrite, run, captioner
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


@command(
    help=(
        "Edit a photo: invert it with the source prompt, then decode source and target(s) "
        "together with Prompt-to-Prompt attention control and dynamic guidance.\n\n"
        "Example:\n\n"
        + examples("icdedit edit examples/chelsea.jpg --src 'a photo of a cat' --tgt 'a photo of a tiger'")
        + "\n\nReplace mode (same word count) amplifies and blends the words that differ; refine mode "
        "amplifies the target's new words. What was derived is printed; --blend / --amplify "
        "override it, --no-blend / --amplify none turn it off.\n\n"
        "SDXL models (-m sdxl-4step-v2) edit as the official SDXL code does, with the prompt switch: "
        "the target prompt, with the --amplify-prompt's embeddings (the source's by default) in the "
        "unguided high-noise steps. --method p2p edits SDXL with Prompt-to-Prompt instead, "
        "--method p2p+switch with both:\n\n"
        + examples(
            "icdedit edit examples/coffee.jpg -m sdxl-4step-v2 --src 'a cup of coffee' --tgt 'a cup of tea' "
            "--method p2p"
        )
        + "\n\nTry settings from one inversion with --grid (a contact sheet and one image per cell):\n\n"
        + examples(f"icdedit edit {CAT} --grid cross_replace=0.2,0.4,0.6 --grid self_replace=0.4,0.6,0.8")
        + "\n\nKeep the edit inside a region (white in the mask image):\n\n"
        + examples(f"icdedit edit {CAT} --mask mask.png --mask-feather 4")
        + "\n\nLook quickly, keep later: --preview decodes with TAESD (fast, approximate; icdedit download "
        "taesd once):\n\n" + examples(f"icdedit edit {CAT} --grid guidance=10,15,19 --preview")
    ),
    no_args_is_help=True,
)
def edit(
    ctx: typer.Context,
    source: Annotated[
        Path, typer.Argument(metavar="IMAGE|LATENT", help="A photo, or a .safetensors latent from `icdedit invert`.")
    ],
    tgt: Annotated[
        Optional[list[str]],
        typer.Option("--tgt", "-t", help="Target prompt; repeat for several edits of one inversion."),
    ] = None,
    src: Annotated[
        Optional[str],
        typer.Option(
            "--src",
            "-s",
            help=(
                "Source prompt describing the photo (a latent file's own prompt by default); 'auto': the photo's "
                "caption, made by the captioner (--captioner)."
            ),
        ),
    ] = None,
    swap: SwapOpt = None,
    captioner: CaptionerOpt = None,
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
    seed: OptionalSeedOpt = None,
    guidance: GuidanceOpt = None,
    tau: TauOpt = None,
    cross_replace: CrossOpt = None,
    self_replace: SelfOpt = None,
    mode: ModeOpt = None,
    method: MethodOpt = None,
    amplify_prompt: AmplifyPromptOpt = None,
    words: WordsOpt = None,
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
    cuda_graphs: CudaGraphsOpt = False,
    compile: CompileOpt = False,
    preview: PreviewOpt = False,
    offline: OfflineOpt = False,
    output: OutOpt = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            "--out",
            metavar="DIR",
            help=(
                "The folder for every output (created; default: the current folder), with --grid and "
                "--side-by-side too. A bare -o name goes in it; an -o in another folder is refused."
            ),
        ),
    ] = None,
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
    score: ScoreOpt = None,
    pick: PickOpt = None,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    started = time.perf_counter()
    if (score or pick) and not grid:
        raise UsageError("--score and --pick are for --grid", "add --grid KEY=V1,V2,...")
    from ..captions import is_auto, parse_swap  # no torch: usage errors stay fast

    swaps = tuple(parse_swap(s) for s in swap or ())
    if swaps and tgt:
        raise UsageError("--swap and --tgt both give the target prompt", "give --tgt or --swap OLD=NEW, not both")
    if not swaps and not tgt:
        raise UsageError("Missing option '--tgt'", "give --tgt 'a photo of ...', or --swap OLD=NEW (a source word)")
    from .. import workflow
    from ..latents import is_latent_file

    amplify_words, amplify_factor = parse_amplify_flag(amplify)
    request = workflow.EditRequest(
        source=source,
        targets=list(tgt or ()),
        swaps=swaps,
        captioner=captioner,
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
            amplify=amplify_factor,
            words=words,
        ),
        blend=parse_blend_flag(blend),
        no_blend=no_blend,
        amplify=amplify_words,
        save_latent=save_latent,
        side_by_side=side_by_side,
        size=size,
        output=output,
        out=out,
        overwrite=overwrite,
        grid=tuple(grid or ()),
        mask=mask,
        mask_feather=mask_feather,
        score=tuple(n.strip() for n in (score or "").split(",") if n.strip()),
        pick=pick,
        run=run_options(device, dtype, attention, cuda_graphs, compile, preview, offline),
    )
    if dry_run:
        from ..dry_run import describe_plan, dry_run_line
        from ..plans import plan_edit

        if is_auto(src) and not is_latent_file(source):
            raise UsageError("--dry-run cannot show a caption (it runs no model)", "write the source prompt with --src")
        planned = describe_plan(plan_edit(request))
        emit(planned, as_json, [dry_run_line(item) for item in planned["items"]] + planned["other_outputs"])
        return
    with progress_bar(ctx, not as_json) as progress:
        result = workflow.run_edit(request, reporter(ctx, progress))
    result["seconds"] = round(time.perf_counter() - started, 3)
    lines = [str(p) for p in result["outputs"]] + ([f"sheet: {result['sheet']}"] if "sheet" in result else [])
    if "ranking" in result and not as_json:
        lines += _ranking_lines(result)
    lines += [str(result[k]) for k in ("side_by_side", "latent") if result.get(k)]
    emit(result, as_json, lines)
