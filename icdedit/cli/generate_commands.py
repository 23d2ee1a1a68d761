"""`icdedit generate`: text to image, thin over `icdedit.generation`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from ..schedule import GENERATION_GUIDANCE, GENERATION_TAU
from .app import command, emit, emit_summary, examples, progress_bar, reporter
from .options import (
    AddressOpt,
    AttentionOpt,
    CompileOpt,
    CudaGraphsOpt,
    DeviceOpt,
    DtypeOpt,
    EngineOpt,
    GpusPerWorkerOpt,
    JsonOpt,
    ModelOpt,
    OfflineOpt,
    PreviewOpt,
    WorkersOpt,
    engine_options,
    parse_seed_flag,
    per_family,
    run_options,
)

ALONE_ONLY = {"output": "-o", "save_latent": "--save-latent", "save_noise": "--save-noise"}
FILE_ONLY = {
    "out": "--out",
    "shard": "--shard",
    "engine": "--engine",
    "address": "--address",
    "workers": "--workers",
    "gpus_per_worker": "--gpus-per-worker",
}


@command(
    help=(
        "Generate images from text with the reverse consistency model (4 steps), as the official "
        "generation code does; every image from its own seed.\n\n"
        "Examples:\n\n"
        + examples(
            "icdedit generate 'a photo of a red fox in the snow' -o fox.png --save-noise fox.safetensors",
            "icdedit edit fox.safetensors --tgt 'a photo of a red fox in the rain'   # edit it, no inversion",
            "icdedit generate 'a lighthouse at dusk' --num 4 --seed 7                 # seeds 7, 8, 9, 10",
            "icdedit generate --prompts generation_coco.csv --out coco/              # resumable, like batch",
            "icdedit generate --prompts generation_coco.csv --out coco/ --engine ray # on a Ray cluster's GPUs",
        )
        + "\n\nA prompt file is a text file (one prompt a line) or a CSV/TSV/JSONL with a caption or prompt "
        "column (and optionally seed): the official generation_coco.csv and "
        "generation_parti-prompts.csv as they are."
    ),
    no_args_is_help=True,
)
def generate(
    ctx: typer.Context,
    prompt: Annotated[
        Optional[str], typer.Argument(metavar="PROMPT", help="What to draw (or use --prompts FILE).")
    ] = None,
    prompts: Annotated[
        Optional[Path],
        typer.Option(
            "--prompts", help="A prompt file instead of PROMPT: .txt, or .csv/.tsv/.jsonl with a caption column."
        ),
    ] = None,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output", "-o", help="Image file (several images: NAME-seed7, NAME-seed8, ...). Default: from the prompt."
        ),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option("--out", help="With --prompts: the folder for images and results.jsonl.")
    ] = None,
    seed: Annotated[
        int,
        typer.Option(
            "--seed",
            metavar="INTEGER|random",
            parser=parse_seed_flag,
            help="Seed of the first image's noise; image i has seed + i (drawn on the CPU). random: a fresh one.",
        ),
    ] = 0,
    num: Annotated[int, typer.Option("--num", "-n", help="Images per prompt, from consecutive seeds.")] = 1,
    guidance: Annotated[
        Optional[float],
        typer.Option("--guidance", "-g", help=f"Guidance scale (default {GENERATION_GUIDANCE:g}, the official)."),
    ] = None,
    tau: Annotated[
        Optional[float],
        typer.Option(
            "--tau", help=f"Dynamic guidance: on for t/1000 <= tau (default {GENERATION_TAU:g}: constant guidance)."
        ),
    ] = None,
    width: Annotated[
        Optional[int],
        typer.Option(
            "--width", help=f"Width, a multiple of 64. Default: {per_family(lambda family: family.resolution)}."
        ),
    ] = None,
    height: Annotated[
        Optional[int], typer.Option("--height", help="Height, a multiple of 64 (default as width).")
    ] = None,
    save_latent: Annotated[
        Optional[Path],
        typer.Option("--save-latent", help="Also write the final latents (.safetensors, tensor 'latent', a row each)."),
    ] = None,
    save_noise: Annotated[
        Optional[Path],
        typer.Option(
            "--save-noise",
            help=(
                "Also write the start noise as `icdedit invert` writes an inversion (named by seed for several "
                "images), to edit the image with `icdedit edit NOISE.safetensors --tgt ...`."
            ),
        ),
    ] = None,
    model: ModelOpt = None,
    shard: Annotated[
        Optional[str],
        typer.Option("--shard", help="With --prompts: K/N, only the K-th of N parts (automatic under torchrun)."),
    ] = None,
    engine: EngineOpt = None,
    address: AddressOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            help=(
                "Images per UNet batch. 1 (default): each image is bit for bit the one its seed gives alone; larger "
                "batches are faster on a GPU and equal it to float32 rounding."
            ),
        ),
    ] = 1,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: AttentionOpt = "auto",
    cuda_graphs: CudaGraphsOpt = False,
    compile: CompileOpt = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace existing outputs (with --prompts: redo done items).")
    ] = False,
    preview: PreviewOpt = False,
    offline: OfflineOpt = False,
    as_json: JsonOpt = False,
) -> None:
    started = time.perf_counter()
    given = locals()
    if (prompt is None) == (prompts is None):
        raise UsageError("give either a PROMPT or --prompts FILE", "e.g. icdedit generate 'a photo of a red fox'")
    wrong = ALONE_ONLY if prompts is not None else FILE_ONLY
    misplaced = [flag for name, flag in wrong.items() if given[name] is not None]
    if misplaced:
        fix = "with --prompts, images go to --out" if prompts is not None else f"{misplaced[0]} is for --prompts"
        raise UsageError(f"{', '.join(misplaced)} cannot be used here", fix)
    from .. import generation  # after the usage checks: a usage error is answered without torch

    common = dict(
        model=model,
        seed=seed,
        num=num,
        guidance=guidance,
        tau=tau,
        width=width,
        height=height,
        batch_size=batch_size,
        overwrite=overwrite,
        run=run_options(device, dtype, attention, cuda_graphs, compile, preview, offline),
    )
    if prompts is not None:
        engine_flags = engine_options(engine, address, workers, gpus_per_worker)
        request = generation.GenerateFileRequest(
            prompts, out or Path("generated"), shard=shard, engine=engine_flags, **common
        )
        with progress_bar(ctx, not as_json, items=True) as progress:
            summary, report = generation.run_generate_file(request, reporter(ctx, progress))
        emit_summary("generate", summary, report, as_json)
        return
    request = generation.GenerateRequest(
        prompt, output=output, save_latent=save_latent, save_noise=save_noise, **common
    )
    with progress_bar(ctx, not as_json) as progress:
        result = generation.run_generate(request, reporter(ctx, progress))
    result["seconds"] = round(time.perf_counter() - started, 3)
    lines = [f"{image['output']}  (seed {image['seed']})" for image in result["images"]]
    emit(result, as_json, lines + [f"noise: {path}" for path in result.get("noise", [])])
