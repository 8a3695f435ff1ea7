"""The append-only parquet store under a results directory, and the queries every reader uses.

Layout::

    RESULTS/tables/<table>/_schema.json                  {"schema_version": N}
    RESULTS/tables/<table>/<key>=<value>/<part>.parquet  one file per write and partition (run id; timing: arch)
    RESULTS/tables/<table>/<part>.parquet                legacy flat parts (read as before; ``compact`` moves them)
    RESULTS/runs/<run_id>/                               config.json, checkpoint.pt (resume), model.pt (final)

A write never touches an existing file: it writes a new part under a temporary name and renames it
into place (:mod:`crt_bench.store.parts`, checked against :mod:`crt_bench.store.schema`), so a crash
leaves either the whole part or nothing, and several processes may write at once.  A query naming a
run reads that run's folder only.  When a run or a certification finishes its partition is compacted
into one part (:mod:`crt_bench.store.compact`).

The ``runs`` and ``certifications`` tables are event logs: a row per state change; the latest row per
run id (per certification id) is the current state, and a "running" state whose process is gone reads
"interrupted" (:mod:`crt_bench.store.status`).  Rows of ``epochs`` and ``certify`` have a key, (run id,
epoch) and (certification id, image index): a resumed run or certification may write a row again
after a kill, so ``read`` keeps the latest row per key (``read(table, raw=True)`` shows everything).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from crt_bench.core.errors import CrtBenchError
from crt_bench.core.states import RunStatus
from crt_bench.store.compact import compact_partition, compact_store
from crt_bench.store.locks import cert_lock_name
from crt_bench.store.parts import read_parts, write_part
from crt_bench.store.query import newest
from crt_bench.store.schema import KEYS, check_table, run_id_of
from crt_bench.store.status import derive_status

LOCKS_DIR = "locks"
"""``RESULTS/locks``: lock files of certifications of model files that are not runs of the store."""


class ResultsStore:
    def __init__(self, root: str | Path = "results") -> None:
        self.root = Path(root)

    # -- tables ---------------------------------------------------------------------------------
    def table_dir(self, table: str) -> Path:
        check_table(table)
        return self.root / "tables" / table

    def append(self, table: str, rows: pd.DataFrame | list[dict[str, Any]]) -> list[Path]:
        """Write ``rows`` as new parts of ``table`` (one per partition value), atomically; the parts written."""
        return write_part(self.table_dir(table), table, rows)

    def read(self, table: str, *, where: Mapping[str, object] | None = None, columns: Iterable[str] | None = None,
             raw: bool = False) -> pd.DataFrame:
        """The rows of ``table`` matching ``where`` (column -> value or list), in write order; empty when none.

        Naming the partition column (``run_id``; timing: ``arch``) reads those folders only.  Keyed tables
        keep the latest row per key unless ``raw`` (which also keeps ``schema_version``, ``written_ns``).
        """
        return read_parts(self.table_dir(table), table, where=where, columns=columns, raw=raw)

    def latest(self, table: str, by: str | Sequence[str] | None = None, *, where: Mapping[str, object] | None = None,
               columns: Iterable[str] | None = None) -> pd.DataFrame:
        """The newest row (in write order) per ``by`` (default: the table's key) among those ``where`` selects."""
        by = list(KEYS[table]) if by is None else by
        rows = self.read(table, where=where, columns=columns)
        keys = [by] if isinstance(by, str) else list(by)
        if rows.empty or not set(keys) <= set(rows.columns):
            return rows
        return newest(rows, keys).reset_index(drop=True)

    # -- runs -----------------------------------------------------------------------------------
    def runs(self, *, where: Mapping[str, object] | None = None) -> pd.DataFrame:
        """The current state of every run ``where`` selects: its latest row, ordered by ``updated``.

        A "running" run whose lock is free (its process is gone) reads "interrupted".
        """
        return derive_status(self._latest_runs(where), lambda row: self.run_dir(str(row["run_id"])) / "run.lock")

    def get_run(self, run_id: str) -> dict[str, Any]:
        """One run's current state (its partition only); a :class:`CrtBenchError` naming recent runs if absent."""
        match = self.runs(where={"run_id": run_id})
        if match.empty:
            runs = self._latest_runs(None, columns=["run_id", "updated"])
            known = ", ".join(runs["run_id"].tolist()[-5:]) if not runs.empty else "none"
            raise CrtBenchError(f"no run {run_id!r} in {self.root} (latest runs: {known})")
        return match.iloc[0].to_dict()

    def finished_run(self, job_key: str) -> str | None:
        """The newest finished run of a grid job, or None."""
        return self.finished_runs(where={"job_key": job_key}).get(job_key)

    def finished_runs(self, *, where: Mapping[str, object] | None = None) -> dict[str, str]:
        """job key -> its newest finished run id, for every job (or those ``where`` selects) with one."""
        runs = self._latest_runs(where, columns=["run_id", "job_key", "status", "updated"])
        if runs.empty or "job_key" not in runs:
            return {}
        done = newest(runs[(runs["status"] == RunStatus.FINISHED) & runs["job_key"].notna() & (runs["job_key"] != "")],
                      "job_key")
        return dict(zip(done["job_key"], done["run_id"]))

    def run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / run_id

    def _latest_runs(self, where: Mapping[str, object] | None, columns: Iterable[str] | None = None) -> pd.DataFrame:
        rows = self.read("runs", where=where, columns=columns)
        if rows.empty or "run_id" not in rows:
            return rows
        return newest(rows, "run_id", order="updated" if "updated" in rows else None).reset_index(drop=True)

    # -- certifications -------------------------------------------------------------------------
    def certification_states(self, *, run_id: str | None = None, transfers: bool = False) -> pd.DataFrame:
        """One row per certification (of ``run_id``, else of every run): its latest unsharded state.

        A shard's rows say how that shard went; the certification as a whole is what the unsharded rows
        say.  A "running" certification whose lock is free reads "interrupted".  Transferred certificates
        (``certify --transfer-from``, a ``key_transfer_from``) are left out unless ``transfers``: "is this
        run certified?" means by CERTIFY.
        """
        states = self.read("certifications", where=None if run_id is None else {"run_id": run_id})
        if states.empty or "cert_id" not in states:
            return pd.DataFrame(columns=["cert_id", "run_id", "status"])
        if "shard" in states:
            states = states[states["shard"].fillna("") == ""]
        if not transfers and "key_transfer_from" in states:
            states = states[states["key_transfer_from"].fillna("") == ""]
        return derive_status(newest(states, "cert_id").reset_index(drop=True),
                             lambda row: self.certification_lock(str(row["run_id"]), str(row["cert_id"])))

    def certification_rows(self, cert_id: str, *, missing_ok: bool = False) -> pd.DataFrame:
        """The per-image rows of one certification (its run's partition only), in write order.

        None: a :class:`CrtBenchError`, or (``missing_ok``) an empty frame with an ``idx`` column.
        """
        rows = self.read("certify", where={"run_id": run_id_of(cert_id), "cert_id": cert_id})
        if rows.empty and not missing_ok:
            raise CrtBenchError(f"no certification {cert_id!r} in {self.root}")
        return rows if not rows.empty else pd.DataFrame({"idx": pd.Series([], dtype="int64")})

    def certification_seconds(self, run_id: str) -> float:
        """Wall seconds spent certifying ``run_id``: its per-image ``seconds`` summed over all its certifications
        (each image once per certification; 0.0 when it has none). Denoised smoothing's cost is mostly here."""
        rows = self.read("certify", where={"run_id": run_id}, columns=["seconds"])
        return float(rows["seconds"].sum()) if not rows.empty else 0.0

    def certification_lock(self, run_id: str, cert_id: str) -> Path:
        """The lock file of a certification: in its run's folder, else in ``RESULTS/locks``."""
        run_dir = self.run_dir(run_id)
        return (run_dir if run_dir.is_dir() else self.root / LOCKS_DIR) / cert_lock_name(cert_id)

    # -- compaction -----------------------------------------------------------------------------
    def compact_run(self, run_id: str, tables: Sequence[str]) -> int:
        """Merge ``run_id``'s parts of each of ``tables`` into one part each; never fatal (a warning)."""
        return sum(compact_partition(self.table_dir(table), table, run_id) for table in tables)

    def compact_all(self) -> tuple[int, int]:
        """Migrate legacy flat parts and compact every partition: (part files before, after).

        Meant for a store that no grid is writing to (``crt-bench compact``).
        """
        return compact_store(self.root)

