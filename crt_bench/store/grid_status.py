"""The grid status file: the state of every job of the last grid."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from crt_bench.core.atomic import atomic_write_bytes

GRID_STATUS_FILE = "grid_status.json"  # the last grid's outcome per job, read by the report


def save_grid_status(results: str, state: dict[str, dict[str, Any]]) -> None:
    rows = [{**s, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")} for s in state.values()]
    atomic_write_bytes(Path(results) / GRID_STATUS_FILE, json.dumps(rows, indent=1).encode())


def read_grid_status(results: str | Path) -> pd.DataFrame:
    """The outcome of the last grid run on this results folder (empty when none ran)."""
    path = Path(results) / GRID_STATUS_FILE
    if not path.is_file():
        return pd.DataFrame(columns=["key", "state", "run_id", "error", "log", "time"])
    return pd.DataFrame(json.loads(path.read_text()))
