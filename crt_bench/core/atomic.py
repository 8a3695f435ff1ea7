"""Atomic file writes: a temporary file in the same folder, then a rename.

A full disk (``ENOSPC``) or quota (``EDQUOT``) during a write becomes :class:`~crt_bench.core.errors.DiskFull`
after the temporary file is removed: the target is either the old file, or absent, never a torn one.
"""
from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from crt_bench.core.errors import DiskFull

_UMASK = os.umask(0)
os.umask(_UMASK)
_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
LOW_FREE_BYTES = 64 << 20
"""torch reports a failed write as a RuntimeError without errno: a folder with less free space than
this is taken to be why."""


def atomic_replace(path: Path, write: Callable[[str], Any]) -> Path:
    """Write ``path`` through ``write(temporary name)`` in its folder, then rename it into place."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes files owner-only; results are meant to be shared
        os.replace(tmp, path)
    except BaseException as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if _is_disk_full(err, path.parent):
            raise DiskFull(path) from err
        raise
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_replace(Path(path), lambda tmp: Path(tmp).write_bytes(data))


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    return atomic_replace(Path(path), lambda tmp: torch.save(obj, tmp))


def _is_disk_full(err: BaseException, folder: Path) -> bool:
    if isinstance(err, OSError):
        return err.errno in _FULL
    if isinstance(err, RuntimeError) and "write failed" in str(err):  # torch.save's C++ writer
        try:
            return shutil.disk_usage(folder).free < LOW_FREE_BYTES
        except OSError:
            return False
    return False
