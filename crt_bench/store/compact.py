"""Compaction: a partition's parts merged into one, and legacy flat parts moved into partitions.

A certification appends a part every 64 images and a run one per epoch; once they finish, their
partition is rewritten as one part holding the same rows (deduplicated where reads deduplicate, in
write order, each row keeping its ``written_ns``).  Only the files present when compaction starts are
removed, so a part appended meanwhile survives; while both exist, readers order by ``written_ns`` and
deduplicate, so the moment is harmless.  Compaction is never fatal: a failure (a full disk, a file
that cannot be read) logs a warning and leaves every part where it was.

``compact_store`` migrates a store of the flat layout (rows keep their legacy order) and compacts every
partition; it is meant for a store no grid is writing to (``crt-bench compact``).
"""
from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from crt_bench.core.errors import CrtBenchError
from crt_bench.store.parts import (ensure_version, legacy_stamps, partition_dir, partition_dirs, partition_value,
                                   parts_in, read_arrow, write_arrow)
from crt_bench.store.query import newest
from crt_bench.store.schema import DEDUPE, KEYS, LEGACY_VERSION, TABLES, check_table, conform_arrow, read_version

log = logging.getLogger(__name__)


def compact_partition(table_dir: Path, table: str, value: object) -> int:
    """Merge the parts of one partition of ``table`` into one; returns how many parts it replaced (0: none)."""
    check_table(table)
    folder = partition_dir(table_dir, table, value)
    snapshot = parts_in(folder)
    if len(snapshot) < 2:
        return 0
    try:
        read_version(table_dir, table)
        rows = read_arrow(table_dir, table, snapshot)
        if rows is None:
            return 0
        (merged,) = write_arrow(table_dir, table, _in_order(table, rows))
    except (OSError, CrtBenchError) as err:
        log.warning("compaction of %s skipped (%s); its %d parts are kept as they are", folder, err, len(snapshot))
        return 0
    _replace(snapshot, merged, folder)
    return len(snapshot)


def migrate_legacy(table_dir: Path, table: str) -> int:
    """Move the flat parts at ``table_dir``'s root into partitions; returns how many it moved (0: none).

    Rows keep their order (``written_ns`` = their position, as a flat read gives it; ``schema_version`` = 1) and columns
    the schema no longer lists; partitions are written all or nothing before any flat part is removed.
    """
    check_table(table)
    snapshot = parts_in(Path(table_dir))
    if not snapshot:
        return 0
    try:
        parts = []
        for part in snapshot:
            try:
                rows = pq.read_table(part)
            except (OSError, pa.ArrowException) as err:
                raise CrtBenchError(f"results file {part} is unreadable ({err}); move it aside to continue") from None
            if rows.num_rows:
                parts.append(rows)
        tables = []
        for rows, stamp in zip(parts, legacy_stamps(p.num_rows for p in parts)):
            rows = rows.append_column("schema_version", pa.array([LEGACY_VERSION] * rows.num_rows, pa.int16()))
            rows = rows.append_column("written_ns", pa.array(stamp, pa.int64()))
            tables.append(conform_arrow(table, rows, strict=False))
        if tables:
            write_arrow(table_dir, table, pa.concat_tables(tables, promote_options="permissive"))
    except (OSError, CrtBenchError) as err:
        log.warning("migration of the flat parts of %s skipped (%s); they are kept and read as before", table_dir, err)
        return 0
    removed = _unlink(snapshot)
    if removed < len(snapshot):
        log.warning("%d flat parts of %s could not be removed after their migration; move them aside, or their "
                    "rows are read twice", len(snapshot) - removed, table_dir)
    return removed


def compact_table(table_dir: Path, table: str) -> None:
    """Migrate ``table``'s flat parts, then compact each partition with two parts or more.

    A table written by a newer crt-bench is refused (:class:`CrtBenchError`) before anything is touched.
    """
    ensure_version(table_dir, table)
    migrate_legacy(table_dir, table)
    for folder in partition_dirs(table_dir, table):
        compact_partition(table_dir, table, partition_value(folder))


def compact_store(root: Path) -> tuple[int, int]:
    """Compact every table under ``root/tables``; returns the number of part files before and after."""
    tables = [(Path(root) / "tables" / t, t) for t in TABLES if (Path(root) / "tables" / t).is_dir()]
    before = sum(_count(folder, table) for folder, table in tables)
    for folder, table in tables:
        compact_table(folder, table)
    return before, sum(_count(folder, table) for folder, table in tables)


def _in_order(table: str, rows: pa.Table) -> pa.Table:
    """Rows by ``written_ns`` (stable); the latest row per key for tables whose reads deduplicate."""
    rows = rows.take(pc.sort_indices(rows, sort_keys=[("written_ns", "ascending")]))
    keys = list(KEYS[table])
    if table in DEDUPE and set(keys) <= set(rows.column_names):
        rows = rows.take(pa.array(newest(rows.select(keys).to_pandas(), keys).index.to_numpy()))
    return rows


def _replace(snapshot: list[Path], merged: Path, folder: Path) -> None:
    """Remove the compacted parts; when not even the first can go, remove the merged part instead."""
    try:
        snapshot[0].unlink(missing_ok=True)
    except OSError as err:
        merged.unlink(missing_ok=True)
        log.warning("compaction of %s undone (%s); its parts are kept as they are", folder, err)
        return
    removed = 1 + _unlink(snapshot[1:])
    if removed < len(snapshot):
        log.warning("%d parts of %s could not be removed after compaction; move them aside, or event rows read "
                    "twice", len(snapshot) - removed, folder)


def _unlink(paths: list[Path]) -> int:
    removed = 0
    for path in paths:
        try:
            path.unlink(missing_ok=True)
            removed += 1
        except OSError:
            pass
    return removed


def _count(table_dir: Path, table: str) -> int:
    return len(parts_in(table_dir)) + sum(len(parts_in(f)) for f in partition_dirs(table_dir, table))
