"""The one error type for bad user input (files, folders, values): it prints as one line naming the file."""

from __future__ import annotations

from pathlib import Path


class InputError(ValueError):
    """Bad input: ``str(err)`` is ``"<path>: <problem>"``, ready for a one-line CLI message."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = None if path is None else str(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{path}: {problem}")
