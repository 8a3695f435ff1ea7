"""Checks of the results folder (a folder, writable, enough free space)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from crt_bench.core.errors import CrtBenchError

MIN_FREE_BYTES = 512 * 2**20  # checkpoints of the paper's models and a certification's parts fit easily


def check_results_dir(results: str | Path, *, write: bool = True, min_free_bytes: int = MIN_FREE_BYTES) -> str:
    """The results folder is a folder (or does not exist yet), accepts a file and has room (``write``), or
    exists (``write=False``: a command that only reads it). Creates nothing: a missing folder is checked
    through its nearest existing parent, and made by the first write. The CLI checks every command's
    results folder with this at parse time."""
    path = Path(results).expanduser()
    if path.exists() and not path.is_dir():
        raise CrtBenchError(f"--results {path} is a file, not a folder: pass a folder (it is created if missing)")
    if not write:
        if not path.is_dir():
            raise CrtBenchError(f"results directory {path} does not exist")
        return f"results: {path}"
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise CrtBenchError(f"--results {path}: {existing} is a file, not a folder: pass another --results folder")
    try:
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".preflight-", delete=True) as probe:
            probe.write(b"crt-bench")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        raise CrtBenchError(f"--results {path} is not writable ({err.strerror or err}): pass a folder you can "
                            "write to, e.g. --results ~/crt-bench-results") from None
    free = shutil.disk_usage(existing).free
    if free < min_free_bytes:
        raise CrtBenchError(f"--results {path} has {free / 2**20:.0f} MiB free; a grid needs at least "
                            f"{min_free_bytes / 2**20:.0f} MiB for checkpoints and results: free some space or "
                            "pass another --results folder")
    return f"results: {path} (writable, {free / 2**30:.1f} GiB free)"
