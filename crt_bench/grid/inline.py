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

from crt_bench.core.errors import CrtBenchError


class InlineJob:
    """A submitted call; it runs on the first :meth:`done` and keeps its result or its exception."""

    paths = None  # no log files: the job's output is this process's own

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self._fn, self._args, self._kwargs = fn, args, kwargs
        self._ran = False
        self._result: Any = None
        self._error: BaseException | None = None

    def done(self) -> bool:
        if not self._ran:
            self._ran = True
            try:
                self._result = self._fn(*self._args, **self._kwargs)
            except Exception as err:  # noqa: BLE001 - kept and re-raised to the grid, as submitit does
                self._error = err
        if self._error is not None:
            raise self._error
        return True

    def result(self) -> Any:
        self.done()
        return self._result

    def results(self) -> list[Any]:
        return [self.result()]

    def cancel(self, check: bool = False) -> None:
        """A job not yet started never runs (a started one ran to its end, or was interrupted, in this process)."""
        if not self._ran:
            self._ran = True
            self._error = CrtBenchError("cancelled before it started (the grid was stopped)")


class InlineExecutor:
    """``submit(fn, *args, **kwargs)`` returns an :class:`InlineJob`; the grid's polling runs it."""

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> InlineJob:
        return InlineJob(fn, args, kwargs)
