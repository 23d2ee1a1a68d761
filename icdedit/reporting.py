"""Reporting to the person at the terminal: progress lines, notes and questions.

The library never prints: a `Reporter` is silent by default, and only the CLI gives it a
progress display, a place for notes and a way to ask.
"""

from __future__ import annotations

from collections.abc import Callable


class Reporter:
    """Progress and notes for the person at the terminal; silent by default (library use).

    `confirm(question)` asks the person (the CLI only does so on an interactive terminal).
    Missing weights are fetched without asking (`weights.ensure_weights`), announced by `note`."""

    def __init__(
        self, progress=None, note: Callable[[str], None] | None = None, confirm: Callable[[str], bool] | None = None
    ):
        self.progress = progress
        self._note = note
        self._confirm = confirm

    def __reduce__(self):
        """Sent to another process (a Ray worker), a Reporter shows no progress there and keeps
        its notes for the driver to print (`take_worker_notes`): the person is at the driver."""
        return (_worker_reporter, ())

    def confirm(self, question: str) -> bool:
        return bool(self._confirm and self._confirm(question))

    def bytes_progress(self) -> Callable[[str, int, int | None], None]:
        """A progress callback for downloads: one line per file."""
        tasks: dict[str, object] = {}

        def update(name: str, done: int, total: int | None) -> None:
            if self.progress is None:
                return
            if name not in tasks:
                tasks[name] = self.progress.add_task(f"downloading {name}", total=total)
            self.progress.update(tasks[name], completed=done, total=total)

        return update

    def note(self, message: str) -> None:
        if self._note is not None:
            self._note(message)

    def stage(self, description: str, total: int | None) -> Callable[..., None]:
        """Start a progress line; the returned callable advances it by one. Its keyword
        arguments (a run's counts: done=, failed=, skipped=) go with it to the display."""
        if self.progress is None:
            return lambda **counts: None
        task = self.progress.add_task(description, total=total)
        return lambda **counts: self.progress.update(task, advance=1, **counts)


_WORKER_NOTES: list[str] = []  # notes made by Reporters sent to this process, not yet taken


def _worker_reporter() -> Reporter:
    return Reporter(note=_WORKER_NOTES.append)


def take_worker_notes() -> list[str]:
    """The notes made in this worker process since the last call (ray_engine sends them back)."""
    notes = list(_WORKER_NOTES)
    del _WORKER_NOTES[: len(notes)]
    return notes
