"""Serving the page (`icdedit ui`): the port checked before the model loads, the session's folder
removed however the server stops, the URL printed once, `--open` and `--share`.

Gradio's own console lines are silenced (`quiet`): "To create a public link, set share=True in
launch()" names a Python argument a CLI user cannot reach; the command prints its own line.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import webbrowser
from pathlib import Path

from .errors import IcdEditError

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def check_port(host: str, port: int) -> None:
    """The port is free to listen on: checked before the model loads (Gradio would fail after)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server binds it
            probe.bind(address)
    except OSError as exc:
        raise IcdEditError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}", "choose another --port, or stop what uses it"
        ) from None


def exposure_warnings(host: str, share: bool) -> list[str]:
    """The warnings for a page others can reach: a non-local host, a public link."""
    warnings = []
    if host not in LOCAL_HOSTS:
        warnings.append(
            f"warning: --host {host} makes the page reachable from other machines; anyone who can reach it can "
            "run edits on this machine"
        )
    if share:
        warnings.append(
            "warning: --share makes the page reachable from anywhere through a public gradio.live link (for up "
            "to a week); anyone with the link can run edits on this machine"
        )
    return warnings


def serving_folder() -> Path:
    """The folder a served page keeps its files in (uploads, edits, inversions, and Gradio's own
    copies: GRADIO_TEMP_DIR, which Gradio reads when it is imported, so call this first).

    It is removed however the process ends: `serve` removes it when Ctrl-C or SIGTERM stops the
    server; before the server runs (the model loading), SIGTERM exits through `sys.exit` (which,
    unlike the default action, runs atexit) and Ctrl-C through the CLI's KeyboardInterrupt, and
    atexit removes it."""
    folder = Path(tempfile.mkdtemp(prefix="icdedit-ui-"))
    os.environ["GRADIO_TEMP_DIR"] = str(folder / "gradio")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return folder


def page_url(host: str, port: int) -> str:
    """The address to open: a wildcard host listens everywhere, and this machine reaches it locally."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://[{shown}]:{port}/" if ":" in shown else f"http://{shown}:{port}/"


class StopRequest:
    """Ctrl-C and SIGTERM, while the server runs, ask it to stop instead of raising in whatever
    the main thread is doing; a second Ctrl-C interrupts at once (the default handler again)."""

    def __init__(self):
        self.event = threading.Event()
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():  # signals reach the main thread only
            for number in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(number) is not signal.SIG_IGN:  # an ignored signal (`nohup`, `&`) stays so
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def _handle(self, number, frame) -> None:
        self.signal_name = signal.Signals(number).name
        self.event.set()
        if signal.SIGINT in self._previous:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)


def launch(app, host: str, port: int, max_upload_mb: int, share: bool, allowed: Path | None = None):
    """Start Gradio's server in its threads and return once it answers (Gradio's own lines off).
    `allowed`: a folder the page may serve files from (the example photos)."""
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=host,
        server_port=port,
        max_file_size=f"{max_upload_mb}mb",
        prevent_thread_lock=True,
        show_error=True,
        quiet=True,
        share=share,
        allowed_paths=[str(allowed)] if allowed else None,
    )
    return app


def announce(app, host: str, port: int, share: bool, say, open_browser: bool) -> str:
    """Print where the page is (and its public link, or why there is none), open it with `--open`;
    the URL opened is returned. Called once the server answers, so the browser finds the page."""
    url = page_url(host, port)
    say(f"icdedit ui: serving on {url} (Ctrl+C stops it)")
    if share:
        if app.share_url:
            say(f"icdedit ui: public link {app.share_url}")
            url = app.share_url
        else:
            say("warning: no public link was made (Gradio says why above); the page is served on this address only")
    if open_browser and not webbrowser.open(url):
        say(f"warning: could not open a browser; open {url} yourself")
    return url


def wait_until_stopped(app, folder: Path | None, stop: StopRequest, say) -> None:
    """Serve until Ctrl-C or SIGTERM, then close the server and remove the session's folder."""
    while not stop.event.wait(0.2) and getattr(app, "is_running", True):
        pass
    say(f"icdedit ui: stopping ({stop.signal_name or 'server closed'})")
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # Gradio's "Closing server running on port: ..."
            app.close()
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
