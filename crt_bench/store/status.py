"""Whether a run or certification whose last row says "running" still has a process behind it.

Writers hold an exclusive ``fcntl.flock`` on their lock file for as long as they run (the kernel
drops it when the process dies, however it dies).  A "running" row whose lock is free
(:func:`~crt_bench.store.locks.lock_is_held`) was left by a process that is gone: :func:`derive_status`
shows it as "interrupted".  The store's ``runs()`` and ``certification_states()`` apply it, so every
reader (summary, report, leaderboard, grid, chain) sees the same status.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from crt_bench.core.states import RunStatus
from crt_bench.store.locks import lock_is_held


def derive_status(frame: pd.DataFrame, lock_path_of: Callable[[Mapping[str, Any]], Path | None]) -> pd.DataFrame:
    """A copy of ``frame`` whose "running" rows read "interrupted" when their lock is free.

    ``lock_path_of(row)`` names a row's lock file (``None``: no lock known, the row is left as it is).
    """
    out = frame.copy()
    if out.empty or "status" not in out.columns:
        return out
    for index in out.index[out["status"] == RunStatus.RUNNING.value]:
        path = lock_path_of(out.loc[index])
        if path is not None and not lock_is_held(path):
            out.loc[index, "status"] = RunStatus.INTERRUPTED.value
    return out
