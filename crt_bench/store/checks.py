"""Checks of the results folder (a folder, writable, enough free space)."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from crt_bench.core.errors import CrtBenchError

MIN_FREE_BYTES = 512 * 2**20  # checkpoints of the paper's models and a certification's parts fit easily


def check_results_dir(results: str | Path, *, min_free_bytes: int = MIN_FREE_BYTES) -> str:
    """The results folder exists (or can be made), is a folder, accepts a file, and has room."""
    path = Path(results).expanduser()
    if path.exists() and not path.is_dir():
        raise CrtBenchError(f"--results {path} is a file, not a folder: pass a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".preflight-", delete=True) as probe:
            probe.write(b"crt-bench")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        raise CrtBenchError(f"--results {path} is not writable ({err.strerror or err}): pass a folder you can "
                            "write to, e.g. --results ~/crt-bench-results") from None
    free = shutil.disk_usage(path).free
    if free < min_free_bytes:
        raise CrtBenchError(f"--results {path} has {free / 2**20:.0f} MiB free; a grid needs at least "
                            f"{min_free_bytes / 2**20:.0f} MiB for checkpoints and results: free some space or "
                            "pass another --results folder")
    return f"results: {path} (writable, {free / 2**30:.1f} GiB free)"
