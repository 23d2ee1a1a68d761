"""Help you can paste: every example in every command's help is one whole command line, whatever
the terminal's width, and parses as the command it names (its options exist, their values fit);
the root flags (--debug, -q) are in every command's help and work after the command's name."""

from __future__ import annotations

import re
import shlex

import pytest
import typer

from icdedit.cli import COMMANDS, app

from .helpers import assert_clean_error, runner

NAMES = [command.command_options.get("name", command.__name__) for command in COMMANDS]


def help_text(args, columns: int) -> str:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": str(columns)}, terminal_width=columns)
    assert result.exit_code == 0, result.output
    return result.stdout


def example_lines(text: str) -> list[str]:
    """The lines of a help's description (above its Arguments, Options or Commands) that are
    commands: they start with `icdedit ` once unindented."""
    description = re.split(r"^(?:Arguments|Options|Commands):$", text, maxsplit=1, flags=re.M)[0]
    return [line.strip() for line in description.splitlines() if line.strip().startswith("icdedit ")]


def parse_example(line: str) -> None:
    """Parse an example as Click would run it, without running it: the command exists and takes
    every option given, with values of the right type, and nothing required is missing."""
    words = shlex.split(line, comments=True)
    assert words[0] == "icdedit", line
    group = typer.main.get_command(app)
    root = group.make_context("icdedit", ["--version"], resilient_parsing=True)
    command = group.get_command(root, words[1])
    assert command is not None, line
    command.make_context(words[1], words[2:], parent=root)  # raises on an unknown option or a bad value


def commands_help(columns: int) -> dict[str, str]:
    return {"": help_text([], columns), **{name: help_text([name], columns) for name in NAMES}}


@pytest.fixture(scope="module")
def helps():
    return {columns: commands_help(columns) for columns in (60, 200)}


def test_every_command_has_examples(helps):
    assert all(example_lines(text) for text in helps[60].values()), [n for n, t in helps[60].items() if not t]


@pytest.mark.parametrize("columns", [60, 200])
def test_every_example_is_a_whole_command_that_parses(helps, columns):
    for name, text in helps[columns].items():
        for line in example_lines(text):
            try:
                parse_example(line)
            except Exception as exc:  # noqa: BLE001 - name the line that does not parse
                raise AssertionError(f"{name or 'icdedit'} --help: {line!r} does not parse: {exc}") from exc


def test_examples_are_the_same_lines_at_any_width(helps):
    """Not rewrapped: a narrow terminal shows each example as the wide one does, comment included."""
    for name in helps[60]:
        assert example_lines(helps[60][name]) == example_lines(helps[200][name]), name
    generate = example_lines(helps[60]["generate"])
    assert any("# seeds 7, 8, 9, 10" in line and line.startswith("icdedit generate") for line in generate)


@pytest.mark.parametrize("name", NAMES)
def test_root_flags_are_in_every_commands_help(helps, name):
    text = helps[200][name]
    assert "--debug" in text and "-q, --quiet" in text


def test_version_flags():
    for flag in ("--version", "-V"):
        result = runner.invoke(app, [flag])
        assert result.exit_code == 0 and result.stdout.startswith("icdedit "), result.output


def test_shell_completion_is_offered():
    text = help_text([], 200)
    assert "--install-completion" in text and "--show-completion" in text


def test_debug_after_the_command_shows_the_traceback(tmp_path):
    """`icdedit invert ... --debug` works as `icdedit --debug invert ...`: the error is raised."""
    args = ["invert", tmp_path / "none.png", "--prompt", "a cat", "--model", "tiny"]
    plain = runner.invoke(app, list(map(str, args)))
    assert_clean_error(plain, "none.png")
    for line in (["--debug", *args], [*args, "--debug"]):
        result = runner.invoke(app, list(map(str, line)))
        assert result.exit_code != 0 and type(result.exception).__name__ == "InputError", result.output


def test_quiet_after_the_command(tmp_path):
    args = ["invert", str(tmp_path / "none.png"), "--prompt", "a cat", "-q"]
    assert_clean_error(runner.invoke(app, args), "none.png")
