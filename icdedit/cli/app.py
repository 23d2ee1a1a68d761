"""The application: root options, one-line errors, progress bars and output, shared by every command."""

from __future__ import annotations

import importlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Annotated

import typer
import typer.core
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
from typer.core import TyperCommand, TyperGroup

from .. import __version__, reporting
from ..errors import IcdEditError

# Typer builds its commands on Click, a copy of its own in recent versions (typer.core._click):
# options added here and the usage errors caught here must be that copy's.
click = getattr(typer.core, "_click", None) or typer.core.click

stdout = Console(soft_wrap=True, highlight=False)
stderr = Console(stderr=True, soft_wrap=True, highlight=False)


DEBUG = "Show tracebacks."
QUIET = "No progress bars or notes on stderr."
ARGV = "icdedit.argv"  # the command line as given, in every context's meta: was --json asked for?


class CommandGroup(TyperGroup):
    """Every command's known errors mapped once, here: an IcdEditError is one line on stderr and
    its exit code (1; usage errors 2), and so is Click's own usage error (exit 2); Ctrl-C exits
    130; a traceback only with --debug. With --json, a failure also prints one JSON object on
    stdout. Unknown exceptions are bugs and show as they are."""

    def make_context(self, info_name, args, parent=None, **extra):
        argv = list(args)  # parsing consumes the list
        try:
            ctx = super().make_context(info_name, args, parent=parent, **extra)
        except click.exceptions.ClickException as exc:
            _fail_usage(exc, argv)
        ctx.meta[ARGV] = argv
        return ctx

    def invoke(self, ctx):
        as_json = asked_for_json(ctx.meta.get(ARGV, []))
        try:
            return super().invoke(ctx)
        except IcdEditError as exc:
            if _options(ctx)["debug"]:
                raise
            _print_error(exc.message, exc.hint, exc.exit_code, as_json, getattr(exc, "problems", None))
            raise typer.Exit(exc.exit_code) from None
        except click.exceptions.ClickException as exc:  # parsing a command's options, or no such command
            _fail_usage(exc, ctx.meta.get(ARGV, []))
        except KeyboardInterrupt:
            _print_error("interrupted: nothing was written", None, 130, as_json)
            raise typer.Exit(130) from None


class Command(TyperCommand):
    """Every command also takes the root's --debug and -q/--quiet, after its name too
    (`icdedit edit ... --debug`), and lists them in its help."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params += _root_flags()


def _root_flag(ctx: typer.Context, param: typer.CallbackParam, value: bool) -> None:
    """A root flag given after the command's name: set as if given before it (eager, so that a
    usage error later on the line already sees it)."""
    root = ctx.find_root().obj
    if value and isinstance(root, dict):
        root[param.name] = True
        if param.name == "quiet":
            _configure_logging(True)


def _flags(
    debug: Annotated[
        bool, typer.Option("--debug", help=DEBUG, is_eager=True, expose_value=False, callback=_root_flag)
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help=QUIET, is_eager=True, expose_value=False, callback=_root_flag)
    ] = False,
) -> None:
    """The root flags as a command's options (Typer makes the Click parameters)."""


def _root_flags() -> list:
    """Fresh Click parameters for --debug and -q/--quiet, made by Typer from `_flags`."""
    flags = typer.Typer()
    flags.command()(_flags)
    return typer.main.get_command(flags).params


def asked_for_json(argv: list[str]) -> bool:
    """Whether the command line asks for --json (before a `--`, after which all are arguments)."""
    return "--json" in (argv[: argv.index("--")] if "--" in argv else argv)


def _fail_usage(exc: click.exceptions.ClickException, argv: list[str]) -> None:
    """Click's own usage error (a missing option, a value of the wrong type, no such option or
    command) as the one line every error is, exit 2. Asking for help with no arguments
    (`no_args_is_help`) stays Click's: it prints the help."""
    if isinstance(exc, getattr(click.exceptions, "NoArgsIsHelpError", ())):
        raise exc
    text = " ".join(exc.format_message().split())
    # Click's own suggestion ("Did you mean 'edit'?", "(Possible options: ...)") goes to the hint
    found = re.search(r"[.]?\s*(Did you mean .*|\(Possible options: .*\))$", text)
    message, suggestion = (text[: found.start()], found.group(1)) if found else (text, "")
    message = message.rstrip(".")
    context = getattr(exc, "ctx", None)
    hint = f"see {context.command_path if context is not None else 'icdedit'} --help"
    if suggestion:
        suggestion = _lower_first(suggestion.strip("()"))
        hint = f"{suggestion}{' ' if suggestion.endswith('?') else '; '}{hint}"
    _print_error(_lower_first(message), hint, exc.exit_code, asked_for_json(argv))
    raise typer.Exit(exc.exit_code)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _print_error(message: str, hint: str | None, exit_code: int, as_json: bool, problems=None) -> None:
    """`error: MESSAGE (hint: HINT)` on stderr (a batch input's problems: one per line); with
    --json also {"error", "hint", "exit_code"[, "problems"]} on stdout."""
    if problems:  # a batch manifest: every bad row at once, one per line
        stderr.print(f"error: {len(problems)} problem(s) in the batch input; nothing was run", markup=False)
        for problem in problems:
            stderr.print(f"  {problem}", markup=False)
    else:
        stderr.print(f"error: {message}" + (f" (hint: {hint})" if hint else ""), markup=False)
    if as_json:
        report = {"error": message, "hint": hint, "exit_code": exit_code}
        if problems:
            report["problems"] = list(problems)
        stdout.print(json.dumps(report), markup=False, soft_wrap=True)


def examples(*lines: str) -> str:
    """Example command lines for a help text, one a line and never rewrapped whatever the
    terminal's width (Click's `\\b` paragraph), so that each can be pasted as it is; a `# ...`
    comment stays on its command's line."""
    return "\b\n" + "\n".join(f"  {line}" for line in lines)


app = typer.Typer(
    cls=CommandGroup,
    name="icdedit",
    help=(
        "Edit real photos from text in about 7 network evaluations with Invertible Consistency "
        "Distillation (iCD).\n\n"
        "Example:\n\n"
        + examples("icdedit edit examples/chelsea.jpg --src 'a photo of a cat' --tgt 'a photo of a tiger'")
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback(invoke_without_command=True)
def _root(
    ctx: typer.Context,
    debug: Annotated[bool, typer.Option("--debug", help=DEBUG)] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help=QUIET)] = False,
    version: Annotated[bool, typer.Option("--version", "-V", help="Print the version and exit.")] = False,
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
    # diffusers' and transformers' notes about our own loading are noise here. They are imported
    # only by the commands that run a model (help and listings answer without them), so they read
    # these when imported; `reporter` quiets what they set up otherwise.
    for name in ("DIFFUSERS_VERBOSITY", "TRANSFORMERS_VERBOSITY"):
        os.environ.setdefault(name, "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def _quiet_model_libraries() -> None:
    """diffusers' and transformers' own progress bars and notes off, where they are imported."""
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
        if name in sys.modules:
            library_logging = importlib.import_module(f"{name}.utils.logging")
            library_logging.set_verbosity_error()
            library_logging.disable_progress_bar()


def _options(ctx: click.core.Context | None) -> dict:
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
    _quiet_model_libraries()

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


def duration(seconds: float) -> str:
    """A time left as a log reader says it: 45s, 2m40s, 1h05m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_line(count: int, total: int | None, counts: dict, seconds: float) -> str:
    """`[12/140] done 11 failed 1 0.8 items/s eta 2m40s`: the rate over the items this run
    worked on (skipped ones cost nothing, so they would make the rate and ETA lie)."""
    parts = [f"[{count}/{total}]" if total else f"[{count}]"]
    parts += [f"{name} {counts[name]}" for name in ("done", "failed") if name in counts]
    if counts.get("skipped"):
        parts.append(f"skipped {counts['skipped']}")
    worked = count - counts.get("skipped", 0)
    if worked > 0 and seconds > 0:
        rate = worked / seconds
        parts.append(f"{rate:.3g} items/s")
        if total and count < total:
            parts.append(f"eta {duration((total - count) / rate)}")
    return " ".join(parts)


class ProgressLines:
    """A run over many items told as plain lines on a stderr that is not a terminal (nohup,
    Slurm, CI logs), where a bar would print nothing useful: a line for the first item, every
    `every` items (a tenth of the run by default), after `seconds` without one, and for the last.
    Only stages that report a run's counts (done=, failed=, ...) are told; the same calls as
    rich's Progress (add_task, update, advance, stop), so the Reporter need not know which."""

    def __init__(self, write: Callable[[str], None], every: int | None = None, seconds: float = 30.0, clock=None):
        self.write, self.every, self.seconds = write, every, seconds
        self.clock = clock or time.monotonic
        self.tasks: dict[int, dict] = {}

    def add_task(self, description: str, total: int | None = None, **fields) -> int:
        now = self.clock()
        self.tasks[len(self.tasks)] = {"total": total, "count": 0, "started": now, "told": now, "fields": fields}
        return len(self.tasks) - 1

    def update(self, task: int, *, advance: float = 0, completed=None, total=None, **fields) -> None:
        state = self.tasks[task]
        state["total"] = total if total is not None else state["total"]
        state["fields"].update(fields)
        if advance:
            state["count"] += int(advance)
            if "done" in state["fields"]:
                self._maybe_tell(state)

    def advance(self, task: int, advance: float = 1) -> None:
        self.update(task, advance=advance)

    def stop(self) -> None:
        pass

    def _maybe_tell(self, state: dict) -> None:
        count, total, now = state["count"], state["total"], self.clock()
        every = self.every or (max(1, total // 10) if total else 10)
        if count == 1 or count % every == 0 or count == total or now - state["told"] >= self.seconds:
            state["told"] = now
            self.write(progress_line(count, total, state["fields"], now - state["started"]))


@contextmanager
def progress_bar(ctx: typer.Context, enabled: bool, items: bool = False):
    """A rich progress bar on stderr, shown only on a terminal and not with --json/--quiet.
    For batches: count, rate and time left; where stderr is not a terminal, a run over many
    items prints progress lines instead (ProgressLines), with --json too (they go to stderr,
    the JSON to stdout), but not with --quiet."""
    quiet = _options(ctx)["quiet"]
    if items and not quiet and not stderr.is_terminal:
        yield ProgressLines(lambda line: stderr.print(line, markup=False))
        return
    show = enabled and stderr.is_terminal and not quiet
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
    """A run over many items: a table (or --json), each failure, the report, what Ctrl-C left
    (`interrupted`, `remaining`: on stderr as a line too); its exit code (130 when interrupted)."""
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
    if summary.interrupted:  # the counts alone read as if the run had ended
        stderr.print(f"interrupted: {summary.remaining} remaining; run the same command to resume", markup=False)
    if summary.exit_code:
        raise typer.Exit(summary.exit_code)


def main() -> None:
    app(prog_name="icdedit")  # `python -m icdedit` too: the usage lines and hints name the command
