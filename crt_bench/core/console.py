"""The two consoles every line goes through: stdout for a command's output, stderr for logs and progress.

``markup=False, emoji=False, highlight=False``: text prints as written (a subset ``range:A:B`` stays
``range:A:B``, a run id ``[x]`` stays ``[x]``); style comes only from :class:`rich.text.Text`.
Outside a terminal (pipes, CI logs, a grid job's log) tables get 200 columns instead of 80.
"""
from __future__ import annotations

import logging
import sys
from functools import lru_cache

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)


def _console(*, stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, markup=False, emoji=False, highlight=False,
                   width=None if stream.isatty() else 200)


@lru_cache(maxsize=None)
def stdout_console() -> Console:
    """Command output: ids, tables, JSON (what a script reads)."""
    return _console(stderr=False)


@lru_cache(maxsize=None)
def stderr_console() -> Console:
    """Logs and progress bars (:mod:`crt_bench.core.logs` prints through it)."""
    return _console(stderr=True)


def progress(*extra: ProgressColumn, enabled: bool = True, transient: bool = False) -> Progress:
    """A progress bar on the stderr console (log lines print above it), ``extra`` columns last; nothing is shown when ``enabled`` is
    False or when logging was set up quiet (``crt-bench -q``: the ``crt_bench`` logger's own level above INFO)."""
    quiet = logging.getLogger("crt_bench").level > logging.INFO
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("ETA"), TimeRemainingColumn(), *extra, console=stderr_console(), disable=not enabled or quiet,
                    transient=transient)
