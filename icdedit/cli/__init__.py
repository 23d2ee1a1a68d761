"""The `icdedit` command line: thin commands over `icdedit.workflow` and the Editor.

`app.py` holds what every command shares (root options, errors, progress, output), `options.py`
the shared option aliases, `edit_commands.py`, `generate_commands.py` and `catalog_commands.py` the commands.

Results (paths, figures, `--json`) go to stdout; logs, progress and hints to stderr. Errors
the user can fix are one line and exit code 1; usage errors exit 2; a traceback only with
`--debug` (or ICDEDIT_DEBUG=1).
"""

# Importing the command modules registers their commands, editing first: `icdedit --help` lists
# them in this order.
from . import edit_commands  # noqa: F401, I001
from . import generate_commands  # noqa: F401
from . import eval_commands  # noqa: F401
from . import ui_commands  # noqa: F401
from . import catalog_commands  # noqa: F401
from .app import app, main

__all__ = ["app", "main"]
