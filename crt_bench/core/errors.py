"""The exceptions users see: a clear message, printed by the CLI as one line without a traceback."""
from __future__ import annotations

from pathlib import Path


class CrtBenchError(Exception):
    """A problem with the user's input or environment (bad name, missing data, corrupt file, ...).

    The CLI prints ``str(err)`` and exits with :attr:`exit_code` (2: bad input); nothing else should be
    needed to act on it.
    """

    exit_code = 2


class DiskFull(CrtBenchError):
    """A write found the disk (or the user's quota) full; the partial file was removed.

    Files written before are whole (atomic renames), so the results written so far stay readable.
    Writers that can say what was kept and how to continue re-raise it with that message.
    """

    exit_code = 1

    def __init__(self, path: str | Path, message: str | None = None) -> None:
        self.path = Path(path)
        super().__init__(message or f"disk full writing {self.path}; free space, then run the same command again")


class JobsFailed(CrtBenchError):
    """Jobs of a grid (sweep, chain, reproduce) failed or did not finish: exit status 1, not 2 (the input was
    fine; the work was not done)."""

    exit_code = 1


def exit_code(err: BaseException) -> int:
    """The exit status the CLI leaves with for ``err`` (2 unless the error says otherwise)."""
    return int(getattr(err, "exit_code", 2))


def one_line(err: BaseException | str, *, first: bool = False) -> str:
    """An error's message on one line: whitespace runs (torchvision's and torch's multi-line messages)
    collapsed to one space; ``first=True`` keeps only the first non-blank line (torch's long unpickling
    explanations).  An exception with no message gives its type's name."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__ if isinstance(err, BaseException) else ""
    return " ".join((lines[0] if first else " ".join(lines)).split())
