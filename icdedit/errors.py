"""One exception family: every user-facing failure is an `IcdEditError` with a hint.

The CLI turns these into a single line on stderr and exit code 1 (2 for a usage error);
anything else is a bug and is allowed to show its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line (its type's name when the message is empty),
    for one-line errors that quote what a library raised."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def closest_name(name: str, known: Iterable[str]) -> str | None:
    """The known name a misspelt one most likely meant (`tinyy` -> `tiny`), or None."""
    close = difflib.get_close_matches(str(name), list(known), n=1)
    return close[0] if close else None


def unknown_name_hint(name: str, known: Iterable[str], what: str) -> str:
    """The hint for a name that is not one of `known`: "did you mean 'tiny'? known models: ..."."""
    known = list(known)
    close = closest_name(name, known)
    listing = f"known {what}: {', '.join(known)}"
    return f"did you mean {close!r}? {listing}" if close else listing


class IcdEditError(Exception):
    """A failure the user can fix. `hint` says how; `exit_code` is what the CLI exits with."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class InputError(IcdEditError):
    """A bad image, latent file, prompt or word."""


class ModelError(IcdEditError):
    """A model description or weight file that is missing or malformed."""


class SettingsError(IcdEditError):
    """A bad preset, flag value or combination of flags."""


class UsageError(SettingsError):
    """A value the tool cannot take (not a number, not finite, out of range, not a choice): a
    usage error, exit code 2, whether it came from a flag or a preset file. (A batch row's bad
    cell fails that row instead; a bad model file is a ModelError.)"""

    exit_code = 2


class OutputError(IcdEditError):
    """An output that cannot or must not be written."""
