"""The part files of a results table: hive partitions written atomically, read through ``pyarrow.dataset``.

Layout of one table folder::

    _schema.json                                  {"schema_version": N}   (crt_bench.store.schema)
    <key>=<quoted value>/<stamp>.<ns>-<uuid>.parquet  one file per append and partition value
    <stamp>.<ns>-<uuid>.parquet                   legacy flat parts (crt-bench before the partitioned store)

``<key>`` is the table's partition column (:data:`~crt_bench.store.schema.PARTITION`), dropped from the
file (it comes back from the folder name); values are ``urllib.parse.quote(value, safe="")`` (run ids
may be paths or ``import:<name>``), a missing value is :data:`NULL_DIR`.  A read that names partition
values opens only their folders, and its other conditions are pushed down to the parquet scan.  Legacy
flat parts are read as before, file by file, in name order, and come before every partitioned row.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from crt_bench.core import atomic
from crt_bench.core.errors import CrtBenchError
from crt_bench.store.query import newest
from crt_bench.store.schema import (DEDUPE, KEYS, LEGACY_VERSION, META_COLUMNS, PARTITION, RENAMED, SCHEMA_FILE,
                                    SCHEMA_VERSION, SCHEMAS, check_table, conform, order_columns, read_version,
                                    renamed_columns)

NULL_DIR = "__HIVE_DEFAULT_PARTITION__"
"""The folder value of rows without a partition value (pyarrow's hive default)."""
RELIST_TRIES = 5
"""How often a read lists a table's parts again when one it listed was removed by a compaction (whose merged
part, written before the removal, holds its rows)."""
def part_name() -> str:
    """A new part's file name; names sort in write order (nanoseconds, then a random tail)."""
    ns = time.time_ns()
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(ns // 1_000_000_000))
    return f"{stamp}.{ns % 1_000_000_000:09d}-{uuid.uuid4().hex[:12]}.parquet"


def partition_dir(table_dir: Path, table: str, value: object) -> Path:
    """The folder of one partition value (``None`` / NaN: :data:`NULL_DIR`)."""
    text = NULL_DIR if _is_null(value) else quote(str(value), safe="")
    return Path(table_dir) / f"{PARTITION[table]}={text}"


def partition_value(folder: Path) -> str | None:
    """The partition value a folder holds (inverse of :func:`partition_dir`)."""
    text = folder.name.split("=", 1)[1]
    return None if text == NULL_DIR else unquote(text)


def partition_dirs(table_dir: Path, table: str) -> list[Path]:
    prefix = f"{PARTITION[table]}="
    folder = Path(table_dir)
    return sorted(p for p in folder.iterdir() if p.name.startswith(prefix) and p.is_dir()) if folder.is_dir() else []


def parts_in(folder: Path) -> list[Path]:
    """The part files directly in ``folder``, in write order (temporary ``.*.tmp`` files excluded)."""
    return sorted(folder.glob("*.parquet")) if folder.is_dir() else []


def ensure_version(table_dir: Path, table: str) -> None:
    """Refuse a table of a newer crt-bench; write ``_schema.json`` when it is absent or older."""
    if read_version(table_dir, table) < SCHEMA_VERSION[table]:
        data = f'{{"schema_version": {SCHEMA_VERSION[table]}}}\n'.encode()
        atomic.atomic_replace(Path(table_dir) / SCHEMA_FILE, lambda tmp: Path(tmp).write_bytes(data))


def write_part(table_dir: Path, table: str, frame: pd.DataFrame | list[dict[str, Any]]) -> list[Path]:
    """Append ``frame`` to ``table``: one new part per partition value, each written atomically.

    Columns are checked and cast (:func:`~crt_bench.store.schema.conform`); every row gets this code's
    ``schema_version`` and its ``written_ns`` (:func:`stamps`).  No rows: nothing is written.
    """
    df = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(frame)
    ensure_version(table_dir, table)
    arrow = conform(table, df)
    if arrow.num_rows == 0:
        return []
    arrow = _set_column(arrow, "schema_version", pa.array([SCHEMA_VERSION[table]] * arrow.num_rows, pa.int16()))
    arrow = _set_column(arrow, "written_ns", pa.array(stamps(arrow.num_rows), pa.int64()))
    return write_arrow(table_dir, table, arrow)


_last_stamp = 0


def stamps(count: int) -> np.ndarray:
    """``written_ns`` of ``count`` rows appended now: ``time.time_ns()`` plus each row's position.

    Rows of one append split over several partitions thus come back in the order they were given, and
    appends of one process never share a stamp (each starts after the previous one's last).
    """
    global _last_stamp
    start = max(time.time_ns(), _last_stamp + 1)
    _last_stamp = start + count - 1
    return np.arange(start, start + count, dtype=np.int64)


def legacy_stamps(frames: Iterable[int]) -> list[np.ndarray]:
    """``written_ns`` of legacy flat parts of the given row counts, in name order: each row's position."""
    out, start = [], 0
    for count in frames:
        out.append(np.arange(start, start + count, dtype=np.int64))
        start += count
    return out


def write_arrow(table_dir: Path, table: str, arrow: pa.Table) -> list[Path]:
    """Write rows that already carry their ``schema_version``/``written_ns``: one part per partition value.

    All or nothing: when a part fails, the parts this call already wrote are removed and the error raised.
    """
    key, written = PARTITION[table], []
    try:
        for value, rows in _split(arrow, key):
            rows = rows.drop_columns([key]) if key in rows.column_names else rows
            path = partition_dir(table_dir, table, value) / part_name()
            written.append(atomic.atomic_replace(path, lambda tmp, rows=rows: pq.write_table(rows, tmp)))
    except BaseException:
        for path in written:
            path.unlink(missing_ok=True)
        raise
    return written


def read_parts(table_dir: Path, table: str, where: Mapping[str, object] | None = None,
               columns: Iterable[str] | None = None, raw: bool = False) -> pd.DataFrame:
    """The rows of ``table`` matching ``where``, in write order (``written_ns``); an empty frame when none.

    ``where``: column -> value (``None`` matches a missing value) or list of values.  The partition
    column's values select folders; the other items filter the scan.  Keyed tables in
    :data:`~crt_bench.store.schema.DEDUPE` keep the latest row per key unless ``raw``; ``raw`` also keeps
    ``schema_version`` and ``written_ns`` (legacy rows: :data:`LEGACY_VERSION` and their position,
    :func:`legacy_stamps`).
    """
    check_table(table)
    table_dir = Path(table_dir)
    read_version(table_dir, table)
    conditions, key = dict(where or {}), PARTITION[table]
    if key in conditions:
        folders = [partition_dir(table_dir, table, v) for v in _values(conditions[key])]
        folders = [f for f in dict.fromkeys(folders) if f.is_dir()]
    else:
        folders = partition_dirs(table_dir, table)
    wanted = None if columns is None else list(columns)
    needed = None if wanted is None else set(wanted) | set(META_COLUMNS) | set(KEYS[table])
    if needed is not None:  # a renamed column is read under its old name too
        needed |= {old for old, new in RENAMED.get(table, {}).items() if new in needed}
    for attempt in range(RELIST_TRIES):  # a part compacted away between listing and reading: list again
        files = [part for folder in folders for part in parts_in(folder)]
        legacy = parts_in(table_dir)
        try:
            frames = [_read_legacy(table_dir, table, conditions, needed)]
            partitioned = read_arrow(table_dir, table, files, {k: v for k, v in conditions.items() if k != key},
                                     needed)
            break
        except CrtBenchError:
            if attempt == RELIST_TRIES - 1 or all(part.exists() for part in files + legacy):
                raise  # a part that is there and unreadable: named by the error
    frames.append(partitioned.to_pandas() if partitioned is not None else pd.DataFrame())
    frames = [f for f in frames if not f.empty]
    if not frames:
        return pd.DataFrame()
    df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    df = _missing_as_nan(table, df.sort_values("written_ns", kind="stable").reset_index(drop=True))
    df = renamed_columns(table, df)
    keys = list(KEYS[table])
    if not raw and table in DEDUPE and set(keys) <= set(df.columns):
        df = newest(df, keys).reset_index(drop=True)
    names = order_columns(table, list(df.columns))
    if wanted is not None:
        names = [n for n in names if n in wanted or (raw and n in META_COLUMNS)]
    if not raw:
        names = [n for n in names if n not in META_COLUMNS]
    return df[names]


def read_arrow(table_dir: Path, table: str, files: list[Path], where: Mapping[str, object] | None = None,
               columns: set[str] | None = None) -> pa.Table | None:
    """Partitioned ``files`` of ``table`` as one arrow table (partition column included), in file order.

    Schemas are unified from the files' footers; ``where`` is pushed down; ``None`` when no rows can match.
    """
    if not files:
        return None
    key = PARTITION[table]
    footers = []
    for part in files:
        try:
            footers.append(pq.read_schema(part))
        except (OSError, pa.ArrowException) as err:
            raise _unreadable(part, err) from None
    unified = pa.unify_schemas([s.remove_metadata() for s in footers], promote_options="permissive")
    unified = unified.append(pa.field(key, pa.large_string())) if unified.get_field_index(key) < 0 else unified
    expression = _expression(where or {}, unified)
    if expression is False:
        return None
    partitioning = ds.HivePartitioning(pa.schema([(key, pa.large_string())]), null_fallback=NULL_DIR,
                                       segment_encoding="uri")
    names = None if columns is None else [f.name for f in unified if f.name in columns or f.name == key]
    try:
        dataset = ds.dataset([str(f) for f in files], format="parquet", partitioning=partitioning,
                             partition_base_dir=str(table_dir), schema=unified)
        return dataset.to_table(filter=expression if expression is not True else None, columns=names)
    except (OSError, pa.ArrowException) as err:
        for part in files:  # name the file that fails, as a per-file read would
            try:
                pq.read_table(part)
            except (OSError, pa.ArrowException) as part_err:
                raise _unreadable(part, part_err) from None
        raise CrtBenchError(f"results table {table_dir} is unreadable ({err}); move its newest parts aside "
                            "to continue") from None


def _read_legacy(table_dir: Path, table: str, where: Mapping[str, object], columns: set[str] | None) -> pd.DataFrame:
    """The flat parts at the table's root, read as crt-bench always read them, then filtered in pandas."""
    frames = []
    for part in parts_in(table_dir):
        try:
            frame = pq.read_table(part).to_pandas()
        except (OSError, pa.ArrowException) as err:
            raise _unreadable(part, err) from None
        if not frame.empty:
            frames.append(frame)
    if not frames:
        return pd.DataFrame()
    frames = [frame.assign(schema_version=np.int16(LEGACY_VERSION), written_ns=stamp)
              for frame, stamp in zip(frames, legacy_stamps(len(f) for f in frames))]
    df = pd.concat(frames, ignore_index=True)
    for name, value in where.items():
        values = _values(value)
        if name not in df.columns:
            if not any(_is_null(v) for v in values):
                return df.iloc[0:0]
            continue
        column = df[name]
        match = column.isin([v for v in values if not _is_null(v)])
        if any(_is_null(v) for v in values):
            match |= column.isna()
        df = df[match]
    if columns is not None:
        df = df[[c for c in df.columns if c in columns]]
    return df.reset_index(drop=True)


def _expression(where: Mapping[str, object], schema: pa.Schema) -> ds.Expression | bool:
    """``where`` as a dataset filter; ``True``: no condition, ``False``: nothing can match."""
    expression: ds.Expression | bool = True
    for name, value in where.items():
        values = _values(value)
        nulls, plain = any(_is_null(v) for v in values), [v for v in values if not _is_null(v)]
        if schema.get_field_index(name) < 0:  # no part has this column: every value is missing
            if not nulls:
                return False
            continue
        field = ds.field(name)
        term = field.isin(plain) if len(plain) > 1 else (field == plain[0]) if plain else None
        if nulls:
            term = field.is_null() if term is None else (term | field.is_null())
        expression = term if expression is True else expression & term
    return expression


def _missing_as_nan(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """Missing booleans as NaN, as a concatenation of parts with and without the column always gave them.

    (arrow reads a boolean column with missing values as objects with ``None``.)
    """
    schema = SCHEMAS[table]
    for name in df.columns:
        index = schema.get_field_index(name)
        if index >= 0 and schema.field(index).type == pa.bool_() and df[name].dtype == object:
            df[name] = df[name].where(df[name].notna(), float("nan"))
    return df


def _split(arrow: pa.Table, key: str) -> list[tuple[str | None, pa.Table]]:
    """``arrow``'s rows per partition value, values in first-seen order, row order kept."""
    if key not in arrow.column_names:
        return [(None, arrow)]
    column = arrow.column(key)
    groups: list[tuple[str | None, pa.Table]] = []
    for value in pc.unique(column).to_pylist():
        mask = pc.is_null(column) if value is None else pc.fill_null(pc.equal(column, value), False)
        groups.append((value, arrow.filter(mask)))
    return groups


def _set_column(arrow: pa.Table, name: str, values: pa.Array) -> pa.Table:
    index = arrow.schema.get_field_index(name)
    return arrow.set_column(index, name, values) if index >= 0 else arrow.append_column(name, values)


def _values(value: object) -> list[object]:
    return list(value) if isinstance(value, (list, tuple, set, frozenset)) else [value]


def _is_null(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def _unreadable(part: Path, err: BaseException) -> CrtBenchError:
    return CrtBenchError(f"results file {part} is unreadable ({err}); move it aside to continue")
