"""`icdedit ui`: a local web page over `icdedit.ui`."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import IcdEditError, UsageError
from ..specs import resolve_model
from .app import command, examples, progress_bar, reporter, stderr
from .options import (
    AttentionOpt,
    CaptionerOpt,
    CompileOpt,
    CudaGraphsOpt,
    DeviceOpt,
    DtypeOpt,
    ModelOpt,
    OfflineOpt,
    PreviewOpt,
    run_options,
)


@command(
    help=(
        "Serve a local web page for live editing: upload a photo, type prompts, move the sliders, paint a mask. "
        "The model loads once and each photo's inversion is cached, so a new target or setting costs only the "
        "reverse steps. The page shows the `icdedit edit` command that gives the same image.\n\n"
        "Examples:\n\n"
        + examples(
            "icdedit ui --model tiny        # then open http://127.0.0.1:7860",
            "icdedit ui --preview          # faster updates, approximate images (icdedit download taesd)",
            "icdedit ui --open             # and open it in the browser",
        )
        + "\n\nNeeds Gradio: `make install` includes it; else, in the clone, pip install -e '.[ui]'."
    )
)
def ui(
    ctx: typer.Context,
    model: ModelOpt = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on (127.0.0.1: this machine only).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 7860,
    max_upload_mb: Annotated[int, typer.Option("--max-upload-mb", help="Largest upload accepted, in MB.")] = 25,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in the browser once it is served.")] = (
        False
    ),
    share: Annotated[
        bool,
        typer.Option(
            "--share",
            help="Also serve the page on a temporary public gradio.live link (needs the network): anyone with the "
            "link can run edits on this machine.",
        ),
    ] = False,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: AttentionOpt = "auto",
    cuda_graphs: CudaGraphsOpt = False,
    compile: CompileOpt = False,
    preview: PreviewOpt = False,
    offline: OfflineOpt = False,
    captioner: CaptionerOpt = None,
) -> None:
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port number", "give one from 1 to 65535, e.g. --port 7860")
    if max_upload_mb < 1:
        raise UsageError(f"--max-upload-mb {max_upload_mb} is not a size", "give a whole number of MB, e.g. 25")
    from ..run_context import load_editor
    from ..ui import UiSession, serve
    from ..ui_server import check_port, exposure_warnings, serving_folder

    check_port(host, port)
    folder = serving_folder()  # before Gradio is imported: it reads GRADIO_TEMP_DIR then
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise IcdEditError(
            "icdedit ui needs Gradio, which is not installed",
            "make install includes it; else, in the clone: pip install -e '.[ui]'",
        ) from None

    for warning in exposure_warnings(host, share):
        stderr.print(warning, markup=False)
    spec = resolve_model(model)
    run = run_options(device, dtype, attention, cuda_graphs, compile, preview, offline)
    with progress_bar(ctx, True) as progress:
        editor = load_editor(spec, run, reporter(ctx, progress))
    session = UiSession(editor, folder, model=model, run=run, captioner=captioner)
    stderr.print(f"icdedit ui: {spec.name} loaded", markup=False)
    say = lambda line: stderr.print(line, markup=False)  # noqa: E731
    serve(session, host, port, max_upload_mb, share=share, open_browser=open_browser, say=say)
