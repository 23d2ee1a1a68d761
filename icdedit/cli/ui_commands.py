"""`icdedit ui`: a local web page over `icdedit.ui`."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import IcdEditError, UsageError
from ..specs import resolve_model
from .app import command, examples, progress_bar, reporter, stderr
from .options import AttentionOpt, CompileOpt, CudaGraphsOpt, DeviceOpt, DtypeOpt, ModelOpt, PreviewOpt, run_options


@command(
    help=(
        "Serve a local web page for live editing: upload a photo, type prompts, move the sliders, paint a mask. "
        "The model loads once and each photo's inversion is cached, so a new target or setting costs only the "
        "reverse steps. The page shows the `icdedit edit` command that gives the same image.\n\n"
        "Examples:\n\n"
        + examples(
            "icdedit ui --model tiny        # then open http://127.0.0.1:7860",
            "icdedit ui --preview          # faster updates, approximate images (icdedit download taesd)",
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
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    attention: AttentionOpt = "auto",
    cuda_graphs: CudaGraphsOpt = False,
    compile: CompileOpt = False,
    preview: PreviewOpt = False,
) -> None:
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a port number", "give one from 1 to 65535, e.g. --port 7860")
    if max_upload_mb < 1:
        raise UsageError(f"--max-upload-mb {max_upload_mb} is not a size", "give a whole number of MB, e.g. 25")
    from ..run_context import load_editor
    from ..ui import LOCAL_HOSTS, UiSession, check_port, serve, serving_folder

    check_port(host, port)
    folder = serving_folder()  # before Gradio is imported: it reads GRADIO_TEMP_DIR then
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise IcdEditError("icdedit ui needs Gradio, which is not installed", "pip install 'icdedit[ui]'") from None

    if host not in LOCAL_HOSTS:
        stderr.print(
            f"warning: --host {host} makes the page reachable from other machines; anyone who can reach it can run "
            "edits on this machine",
            markup=False,
        )
    spec = resolve_model(model)
    run = run_options(device, dtype, attention, cuda_graphs, compile, preview)
    with progress_bar(ctx, True) as progress:
        editor = load_editor(spec, run, reporter(ctx, progress))
    session = UiSession(editor, folder, model=model, run=run)
    stderr.print(f"icdedit ui: {spec.name} on http://{host}:{port} (Ctrl+C stops it)", markup=False)
    serve(session, host, port, max_upload_mb)
