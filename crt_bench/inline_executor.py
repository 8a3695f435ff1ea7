"""The ``inline`` executor: a grid's jobs run one after another in this process, without submitit.

submitit's executors (``local`` subprocesses, ``slurm``, ``debug``) need submitit installed; a machine
that has only torch and the scientific stack (a preinstalled GPU image, no network) still runs a whole
grid with ``--executor inline``. Like submitit's debug executor, a job runs when the grid first asks
whether it is done, so its output goes straight to this console; it shares the process (and its CUDA
context) with the grid, which is what a single-GPU check wants.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any


class InlineJob:
    """A submitted call; it runs on the first :meth:`done` and keeps its result or its exception."""

    paths = None  # no log files: the job's output is this process's own

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._fn, self._args = fn, args
        self._ran = False
        self._result: Any = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        if not self._ran:
            self._ran = True
            try:
                self._result = self._fn(*self._args)
            except Exception as err:  # noqa: BLE001 - kept and re-raised to the grid, as submitit does
                self._error = err
        if self._error is not None:
            raise self._error
        return True

    def results(self) -> list[Any]:
        self.done()
        return [self._result]

    def cancel(self, check: bool = False) -> None:
        """Nothing to cancel: a job that has started runs to its end in this process."""


class InlineExecutor:
    """``submit(fn, *args)`` returns an :class:`InlineJob`; the grid's polling runs it."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> InlineJob:
        return InlineJob(fn, args)
