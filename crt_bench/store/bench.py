"""Benchmark tables under the results folder."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from crt_bench.core.atomic import atomic_replace


def write_bench_table(rows: pd.DataFrame | list[dict[str, Any]], out_dir: str | Path, name: str) -> Path:
    """A benchmark's rows as ``out_dir/<name>-<local time>.parquet`` (atomically); returns the path."""
    df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    path = Path(out_dir) / f"{name}-{time.strftime('%Y%m%dT%H%M%S')}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_replace(path, lambda tmp: df.to_parquet(tmp, index=False))
