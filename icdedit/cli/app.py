"""The application: root options, one-line errors, progress bars and output, shared by every command."""

from __future__ import annotations

import json
import logging
import os
import sys
from contextlib import contextmanager
from typing import Annotated

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
from typer.core import TyperGroup

from .. import __version__, reporting
from ..errors import IcdEditError

stdout = Console(soft_wrap=True, highlight=False)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)


class CommandGroup(TyperGroup):
    """Every command's known errors mapped once, here: an IcdEditError is one line on stderr and
    its exit code (1; usage errors 2), Ctrl-C exit 130; a traceback only with --debug. Unknown
    exceptions are bugs and show as they are."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except IcdEditError as exc:
            if _options(ctx)["debug"]:
                raise
            _print_error(exc)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            stderr.print("interrupted: nothing was written", markup=False)
            raise typer.Exit(130) from None


def _print_error(exc: IcdEditError) -> None:
    problems = getattr(exc, "problems", None)
    if problems:  # a batch manifest: every bad row at once, one per line
        stderr.print(f"error: {len(problems)} problem(s) in the batch input; nothing was run", markup=False)
        for problem in problems:
            stderr.print(f"  {problem}", markup=False)
    else:
        stderr.print(f"error: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""), markup=False)


app = typer.Typer(
    cls=CommandGroup,
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


def command(**options):
    """What a command is registered with (help, name, ...): kept on the function; `cli/__init__.py`
    registers every command in one place."""

    def describe(function):
        function.command_options = options
        return function

    return describe


def reporter(ctx: typer.Context, progress, interactive: bool = True) -> reporting.Reporter:
    """Progress and notes on stderr (silent with --quiet); questions only on a terminal."""
    quiet = _options(ctx)["quiet"]

    def confirm(question: str) -> bool:
        if not (interactive and sys.stdin.isatty() and stderr.is_terminal):
            return False
        progress.stop()
        return typer.confirm(question, default=False, err=True)

    return reporting.Reporter(progress, None if quiet else lambda message: stderr.print(message, markup=False), confirm)


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


# -- the output sink: results on stdout, as lines or as one JSON object --------------------------
def emit(result: dict, as_json: bool, lines: list[str]) -> None:
    if as_json:
        stdout.print(json.dumps(result, default=str), markup=False, soft_wrap=True)
    else:
        for line in lines:
            stdout.print(line, markup=False)


def emit_summary(command: str, summary, report, as_json: bool) -> None:
    """A run over many items: a table (or --json), each failure, the report; its exit code."""
    result = {"command": command, "report": str(report), **summary.as_dict()}
    if as_json:
        emit(result, True, [])
    else:
        table = Table("done", "skipped", "failed", "seconds per item", box=None)
        per_item = result["seconds_per_item"]
        counts = (len(summary.done), len(summary.skipped), len(summary.failed))
        table.add_row(*map(str, counts), "-" if per_item is None else f"{per_item:.2f}")
        stdout.print(table)
        emit(result, False, [f"failed: item {n}: {reason}" for n, reason in summary.failed.items()])
        emit(result, False, [f"report: {report}"])
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def main() -> None:
    app()
