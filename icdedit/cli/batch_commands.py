"""`icdedit batch`: thin over `icdedit.batch`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import UsageError
from .app import command, emit, emit_summary, examples, progress_bar, reporter
from .options import (
    AddressOpt,
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
    EngineOpt,
    GpusPerWorkerOpt,
    GuidanceOpt,
    JsonOpt,
    MethodOpt,
    ModelOpt,
    ModeOpt,
    OfflineOpt,
    OptionalSeedOpt,
    PreviewOpt,
    SelfOpt,
    SizeOpt,
    SwapOpt,
    TauOpt,
    WordsOpt,
    WorkersOpt,
    engine_options,
    parse_amplify_flag,
    parse_blend_flag,
    run_options,
)


@command(
    help=(
        "Edit many photos with one model load: a manifest (CSV, TSV, JSONL, YAML; the PIE-Bench "
        "editing CSV as it is) or images (folders, globs, paths) with --src/--tgt for each. "
        "Re-running skips what is done; a bad item is recorded and the rest go on. Exit code: 0 "
        "all done, 1 some items failed, 2 unusable input.\n\n"
        "Examples:\n\n"
        + examples(
            "icdedit batch edits.csv --images photos/ --out edited/",
            "icdedit batch 'photos/*.jpg' --src 'a photo of a cat' --tgt 'a photo of a tiger' --out tigers/",
            "icdedit batch edits.csv --images photos/ --out edited/ --engine ray --workers 8   # on a Ray cluster",
        )
    ),
    no_args_is_help=True,
)
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
    src: Annotated[
        Optional[str],
        typer.Option(
            "--src",
            "-s",
            help="Source prompt for every item without one; 'auto': each photo's caption (as a blank or auto cell).",
        ),
    ] = None,
    tgt: Annotated[Optional[str], typer.Option("--tgt", "-t", help="Target prompt for every item without one.")] = None,
    swap: SwapOpt = None,
    captioner: CaptionerOpt = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder (created); results.jsonl goes there too.")] = Path(
        "edits"
    ),
    model: ModelOpt = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help="Preset for rows without their own.")] = None,
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
    engine: EngineOpt = None,
    address: AddressOpt = None,
    workers: WorkersOpt = None,
    gpus_per_worker: GpusPerWorkerOpt = None,
    side_by_side: Annotated[
        bool, typer.Option("--side-by-side", help="Also write original | edit for each item.")
    ] = False,
    size: SizeOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: AttentionOpt = "auto",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo items that are already done.")] = False,
    cuda_graphs: CudaGraphsOpt = False,
    compile: CompileOpt = False,
    preview: PreviewOpt = False,
    offline: OfflineOpt = False,
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
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    from ..captions import parse_swap  # no torch: usage errors stay fast

    swaps = tuple(parse_swap(s) for s in swap or ())
    if swaps and tgt is not None:
        raise UsageError("--swap and --tgt both give the target prompt", "give --tgt or --swap OLD=NEW, not both")
    from .. import batch as batch_run

    amplify_words, amplify_factor = parse_amplify_flag(amplify)
    request = batch_run.BatchRequest(
        inputs=inputs,
        images=images,
        out=out,
        model=model,
        size=size,
        shard=shard,
        overwrite=overwrite,
        side_by_side=side_by_side,
        batch_size=batch_size,
        grid=tuple(grid or ()),
        run=run_options(device, dtype, attention, cuda_graphs, compile, preview, offline),
        captioner=captioner,
        engine=engine_options(engine, address, workers, gpus_per_worker),
        defaults=dict(
            src=src,
            tgt=tgt,
            swaps=swaps,
            preset=preset,
            seed=seed,
            blend=parse_blend_flag(blend),
            amplify=amplify_words,
            bad_blend=bad_blend,
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
        ),
    )
    if dry_run:
        from ..dry_run import dry_run_line

        items = batch_run.dry_run_batch(request, reporter(ctx, None))
        emit({"items": items}, as_json, [dry_run_line(item) for item in items])
        raise typer.Exit(1 if any(item["problem"] for item in items) else 0)
    with progress_bar(ctx, not as_json, items=True) as progress:
        summary, report = batch_run.run_batch(request, reporter(ctx, progress))
    emit_summary("batch", summary, report, as_json)
