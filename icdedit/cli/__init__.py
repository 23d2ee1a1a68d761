"""The `icdedit` command line: thin commands over the library (`workflow`, `batch`, `generation`,
`evaluation`, `ui`, `catalog`).

`app.py` holds what every command shares (root options, the one error mapping, progress, the
output sink), `options.py` the shared option aliases (the run flags of every model-running
command among them), the `*_commands.py` modules the commands, registered here, in one place.

Results (paths, figures, `--json`) go to stdout; logs, progress and hints to stderr. Errors
the user can fix are one line and exit code 1; usage errors (Click's own too) exit 2; with `--json`
also one JSON object on stdout; a traceback only with `--debug` (or ICDEDIT_DEBUG=1), which, like
`-q`, goes before or after the command's name.

Only light registries are imported until a command runs: help, `--version`, `presets`, `models`
and usage errors answer without torch (tests/test_cli_startup.py).
"""

from . import (
    batch_commands,
    catalog_commands,
    edit_commands,
    eval_commands,
    generate_commands,
    info_commands,
    ui_commands,
)
from .app import Command, app, main

# Every command, in the order `icdedit --help` lists them.
COMMANDS = (
    edit_commands.invert,
    edit_commands.reconstruct,
    edit_commands.edit,
    batch_commands.batch,
    generate_commands.generate,
    eval_commands.eval_,
    ui_commands.ui,
    catalog_commands.models,
    catalog_commands.download,
    catalog_commands.presets,
    info_commands.info,
)
for _command in COMMANDS:
    app.command(cls=Command, **_command.command_options)(_command)

__all__ = ["COMMANDS", "app", "main"]
