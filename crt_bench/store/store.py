"""The append-only parquet store under a results directory.

Layout::

    RESULTS/tables/<table>/<part>.parquet   one file per write: runs, epochs, certify, ...
    RESULTS/runs/<run_id>/                   config.json, checkpoint.pt (resume), model.pt (final)

A write never touches an existing file: it writes a new part under a temporary name in the same
directory and renames it into place, so a crash leaves either the whole part or nothing, and several
processes may write at once. A table is read as the concatenation of its parts. The ``runs`` table is
an event log: a run appends a row when it starts and another when it finishes or fails; the latest row
per run id is its current state (``ResultsStore.runs()``).

Rows of ``epochs`` and ``certify`` have a key, (run id, epoch) and (certification id, image index):
a resumed run or certification may write a row again after a kill (or two processes may have, before
the per-run locks), so ``read`` keeps the latest row per key and every reader sees each epoch and each
image once (``read(table, raw=True)`` shows everything on disk).
"""
from __future__ import annotations

import os
import time
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from crt_bench.core import atomic
from crt_bench.core.errors import CrtBenchError

TABLES = ("runs", "epochs", "certify", "timing", "certifications")  # certifications: one row per state change
ROW_KEYS = {"epochs": ("run_id", "epoch"), "certify": ("cert_id", "idx")}
"""Tables whose rows are keyed: ``read`` keeps the latest row (in write order) per key."""
os.umask(atomic._UMASK)


class ResultsStore:
    def __init__(self, root: str | Path = "results") -> None:
        self.root = Path(root)

    # -- tables ---------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")
        return self.root / "tables" / table

    def append(self, table: str, rows: pd.DataFrame | list[dict[str, Any]]) -> Path:
        """Write ``rows`` as a new part of ``table``, atomically."""
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        # Nanoseconds in the name keep parts written within one second in write order when sorted.
        ns = time.time_ns()
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(ns // 1_000_000_000))
        name = f"{stamp}.{ns % 1_000_000_000:09d}-{uuid.uuid4().hex[:12]}.parquet"
        arrow = pa.Table.from_pandas(df, preserve_index=False)
        return atomic.atomic_replace(self.table_dir(table) / name, lambda tmp: pq.write_table(arrow, tmp))

    def read(self, table: str, raw: bool = False) -> pd.DataFrame:
        """All parts of ``table``, in write order; an empty frame when there are none.

        Keyed tables (:data:`ROW_KEYS`) keep the latest row per key unless ``raw``.
        """
        folder = self.table_dir(table)
        parts = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        frames = []
        for part in parts:
            try:
                frames.append(pq.read_table(part).to_pandas())
            except (OSError, pa.ArrowException) as err:
                raise CrtBenchError(f"results file {part} is unreadable ({err}); move it aside to continue") from None
        frames = [f for f in frames if not f.empty]
        df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        key = list(ROW_KEYS.get(table, ()))
        if raw or df.empty or not key or not set(key) <= set(df.columns):
            return df
        return df[~df.duplicated(key, keep="last")].reset_index(drop=True)

    # -- runs -----------------------------------------------------------------------------------
    def runs(self) -> pd.DataFrame:
        """The current state of every run: the latest ``runs`` row per run id."""
        df = self.read("runs")
        if df.empty:
            return df
        return df.sort_values("updated", kind="stable").groupby("run_id", sort=False).tail(1).reset_index(drop=True)

    def get_run(self, run_id: str) -> dict[str, Any]:
        runs = self.runs()
        match = runs[runs["run_id"] == run_id] if not runs.empty else runs
        if match.empty:
            known = ", ".join(runs["run_id"].tolist()[-5:]) if not runs.empty else "none"
            raise CrtBenchError(f"no run {run_id!r} in {self.root} (latest runs: {known})")
        return match.iloc[0].to_dict()

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id


def _runs_for(store: ResultsStore, key: str) -> pd.DataFrame:
    runs = store.runs()
    if runs.empty or "job_key" not in runs:
        return pd.DataFrame(columns=["run_id", "status", "job_key"])
    return runs[runs["job_key"] == key]


def finished_run(store: ResultsStore, key: str) -> str | None:
    runs = _runs_for(store, key)
    done = runs[runs["status"] == "finished"]
    return str(done["run_id"].iloc[-1]) if not done.empty else None
