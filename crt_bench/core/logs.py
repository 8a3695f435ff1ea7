"""Logging set-up: one handler on the ``crt_bench`` logger that prints each record as one line on stderr.

Library modules only do ``log = logging.getLogger(__name__)`` and never configure logging; the CLI
calls :func:`setup_logging` once (``-q``: warnings and errors only; ``-v``: debug lines too), and so does
a grid job running in another process (it carries the grid's verbosity).
"""
from __future__ import annotations

import logging

from rich.text import Text

from crt_bench.core.console import stderr_console

LOGGER = "crt_bench"

_PREFIX = {logging.WARNING: ("warning: ", "yellow"), logging.ERROR: ("error: ", "bold red"),
           logging.CRITICAL: ("error: ", "bold red")}


class ConsoleHandler(logging.Handler):
    """A record -> one line (never wrapped into a grid like rich's RichHandler) on the stderr console."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            prefix, style = _PREFIX.get(record.levelno, ("", "dim" if record.levelno < logging.INFO else ""))
            stderr_console().print(Text.assemble((prefix, style), (message, style if not prefix else "")),
                                   soft_wrap=True)
        except Exception:  # noqa: BLE001  (logging's contract: a broken handler never raises)
            self.handleError(record)


def level_for(verbosity: int) -> int:
    """``-q`` (verbosity < 0): WARNING; default: INFO; ``-v``: DEBUG."""
    return logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO


def setup_logging(verbosity: int = 0) -> None:
    """Install the one handler on the ``crt_bench`` logger (again: replaced, not added twice)."""
    logger = logging.getLogger(LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, ConsoleHandler)]:
        logger.removeHandler(handler)
    logger.addHandler(ConsoleHandler())
    logger.setLevel(level_for(verbosity))
    logger.propagate = False


def verbosity() -> int:
    """The verbosity :func:`setup_logging` set (what a grid job hands on to its process); 0 (INFO) where logging
    was never set up (a grid run from Python, not the CLI): its jobs still print their progress lines."""
    logger = logging.getLogger(LOGGER)
    if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
        return 0
    level = logger.getEffectiveLevel()
    return -1 if level >= logging.WARNING else 1 if level <= logging.DEBUG else 0
