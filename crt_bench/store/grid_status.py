"""The grid status file: the state of every job of the last grid, and what a grid submitted to SLURM.

``RESULTS/grid_status.json`` is a list of rows, one per job key: ``state``, ``run_id``, ``error``, ``log`` and
``time``; a grid on SLURM adds ``slurm_job_id`` (the scheduler's id of the job that runs it), ``needs`` (the keys
and roles of the jobs it waits for, ``[{"key", "role"}]``), ``label``, ``run_key`` and ``certify`` (what makes it
finished in the store). A detached ``reproduce`` adds rows for its timing and report jobs (``step`` true); the
report's missing cells read the grid's rows only. Every write replaces the whole file atomically.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from crt_bench.core.atomic import atomic_write_bytes
from crt_bench.core.states import RunStatus
from crt_bench.store.store import ResultsStore

GRID_STATUS_FILE = "grid_status.json"  # the last grid's outcome per job, read by the report
COLUMNS = ["key", "state", "run_id", "error", "log", "time"]


def save_grid_status(results: str | Path, state: dict[str, dict[str, Any]] | list[dict[str, Any]]) -> None:
    rows = state.values() if isinstance(state, dict) else state
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    rows = [{**s, "time": now} for s in rows]
    atomic_write_bytes(Path(results) / GRID_STATUS_FILE, json.dumps(rows, indent=1, default=str).encode())


def grid_rows(results: str | Path) -> list[dict[str, Any]]:
    """Every row of the file as written (steps included); empty when no grid ran here."""
    path = Path(results) / GRID_STATUS_FILE
    return json.loads(path.read_text()) if path.is_file() else []


def read_grid_status(results: str | Path) -> pd.DataFrame:
    """The outcome of the last grid run on this results folder, its jobs only (empty when none ran)."""
    rows = [row for row in grid_rows(results) if not row.get("step")]
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=COLUMNS)


def finished_jobs(store: ResultsStore, jobs: Iterable[tuple[str, str, bool]]) -> dict[str, str]:
    """Job key -> run id of each ``(key, run_key, certify)`` whose work is in the store: the run of ``run_key``
    finished and, where ``certify``, a certification of it finished. Two reads of the store in all."""
    finished = store.finished_runs()
    certified = set(store.certification_states().query(f"status == '{RunStatus.FINISHED.value}'")["run_id"])
    out = {}
    for key, run_key, certify in jobs:
        run_id = finished.get(run_key)
        if run_id is not None and (not certify or run_id in certified):
            out[key] = run_id
    return out
