"""Whether a run or certification whose last row says "running" still has a process behind it.

Writers hold an exclusive ``fcntl.flock`` on their lock file for as long as they run (the kernel
drops it when the process dies, however it dies).  A reader asks for a shared lock without waiting
and lets go at once: refused means a writer holds it.  A "running" row whose lock is free was left by
a process that is gone: :func:`derive_status` shows it as "interrupted".
"""
from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

RUNNING = "running"
INTERRUPTED = "interrupted"


def lock_is_held(path: str | Path) -> bool:
    """Whether some process holds ``path``'s lock (a missing file is a free lock).

    flock locks belong to an open file description, so this new descriptor is refused even in the
    process that holds the lock.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def derive_status(frame: pd.DataFrame, lock_path_of: Callable[[Mapping[str, Any]], Path | None]) -> pd.DataFrame:
    """A copy of ``frame`` whose "running" rows read "interrupted" when their lock is free.

    ``lock_path_of(row)`` names a row's lock file (``None``: no lock known, the row is left as it is).
    """
    out = frame.copy()
    if out.empty or "status" not in out.columns:
        return out
    for index in out.index[out["status"] == RUNNING]:
        path = lock_path_of(out.loc[index])
        if path is not None and not lock_is_held(path):
            out.loc[index, "status"] = INTERRUPTED
    return out
