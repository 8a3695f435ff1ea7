"""The one exception type users see: a clear message, printed by the CLI without a traceback."""
from __future__ import annotations


class CrtBenchError(Exception):
    """A problem with the user's input or environment (bad name, missing data, corrupt file, ...).

    The CLI prints ``str(err)`` and exits with status 2; nothing else should be needed to act on it.
    """


def one_line(err: BaseException | str, *, first: bool = False) -> str:
    """An error's message on one line: whitespace runs (torchvision's and torch's multi-line messages)
    collapsed to one space; ``first=True`` keeps only the first non-blank line (torch's long unpickling
    explanations).  An exception with no message gives its type's name."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__ if isinstance(err, BaseException) else ""
    return " ".join((lines[0] if first else " ".join(lines)).split())
