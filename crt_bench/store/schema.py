"""The results tables' schemas: one ``pyarrow`` schema per table, its partition column, its row keys.

Every row carries ``schema_version`` (int16: the table's :data:`SCHEMA_VERSION` when it was written;
1 = the flat layout of earlier crt-bench, set on legacy rows when they are read or migrated) and
``written_ns`` (int64: ``time.time_ns()`` at the append plus the row's position in it; rows are read back
in this order).

An append is checked against the table's schema: a column the schema does not list is refused (a new
column is added here, in :data:`SCHEMAS`, so that every writer and reader agrees on its type), a listed
column is cast to the schema's type, and a column the rows do not have stays absent (frames read back
as they were written).  Each table folder holds ``_schema.json`` (``{"schema_version": N}``): a folder
written by a newer crt-bench is refused, an older or absent one is (re)written.
"""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa

from crt_bench.core.constants import IMPORT_PREFIX
from crt_bench.core.errors import CrtBenchError

TABLES = ("runs", "epochs", "certify", "timing", "certifications", "agreement")
LEGACY_VERSION = 1
"""Rows of the flat layout (``tables/<table>/*.parquet``, no ``schema_version`` column)."""
SCHEMA_VERSION: dict[str, int] = {**{table: 2 for table in TABLES}, "certify": 5, "certifications": 3,
                                  "epochs": 3, "timing": 4}
"""2: the partitioned layout; 3 (``epochs``): each evaluation's per-image correctness (``noisy_test_images``,
``noisy_test_correct``: :func:`crt_bench.core.bits.pack_bits`), absent from older rows; 3 (``certify``, ``certifications``): transferred certificates' columns
(``procedure``, ``transfer_from``, ``n_p``, ``alpha_zeta``, ``disagreements``; ``key_transfer_from``, ``key_n_p``,
``key_alpha_zeta``), absent from the rows of plain CERTIFY; 4 (``certify``): the counts behind each row
(:data:`COUNT_COLUMNS`), so a certificate can be recomputed at another alpha without sampling
(:mod:`crt_bench.analysis.recertify`).  Rows written before version 4 (and imported logs, which never had
them) read these columns as missing (null).  A transferred row keeps its teacher's counts and ``pA_lower``
(as it keeps the teacher's ``n0``, ``n``, ``alpha``): with ``disagreements`` of ``n_p`` at ``alpha_zeta`` they
give its radius; 3 (``timing``): the probe's ``protocol`` (engine or
paper), ``measure``, ``config`` (its hyper-parameters in words), ``recipe`` (EPOCHSxBATCH) and GPU kernel-busy time
(``kernel_seconds_per_batch``, ``kernel_busy_fraction``); older rows lack them (read as the engine protocol). ``agreement`` (new in version 2's layout, so 2):
a lower-precision certification's sample against fp32 (:mod:`crt_bench.certify.agreement`); a store without
the table reads it as empty. 5 (``certify``) and 4 (``timing``): columns renamed (:data:`RENAMED`)."""
RENAMED: dict[str, dict[str, str]] = {"certify": {"kind": "procedure"}, "timing": {"kind": "hours_basis"}}
"""Columns renamed since older rows were written (old -> new), read back under the new name: a certify row's
``procedure`` (``certify``: CERTIFY; ``transfer``: a transferred certificate) and a timing row's ``hours_basis``
(``projected``) were both ``kind``."""
COUNT_COLUMNS = ("c_a", "selection_count", "n_a", "n_counted", "p_a_lower")
"""``c_a``: the class the ``n0`` selection samples chose (kept where the row abstains too: a looser alpha may
certify it); ``selection_count``: votes of the chosen class ``cA`` among the ``n0`` selection samples; ``n_a``: its votes
among the ``n_counted`` estimation samples counted, ``n_counted < n`` where exact early abstention stopped the
image (its counts are partial: :mod:`crt_bench.certify.early_stop`); ``p_a_lower``: the one-sided Clopper-Pearson
lower bound of ``n_a`` of ``n`` at ``alpha``."""
SCHEMA_FILE = "_schema.json"
META_COLUMNS = ("schema_version", "written_ns")

PARTITION: dict[str, str] = {"runs": "run_id", "epochs": "run_id", "certify": "run_id",
                             "certifications": "run_id", "timing": "arch", "agreement": "run_id"}
"""The hive partition column of each table: a query naming its value opens only that folder."""
KEYS: dict[str, tuple[str, ...]] = {"runs": ("run_id",), "epochs": ("run_id", "epoch"),
                                    "certify": ("cert_id", "idx"), "certifications": ("cert_id", "shard"),
                                    "timing": (), "agreement": ()}
"""What a row is the latest state of (``runs``, ``certifications``: event logs, one row per change)."""
DEDUPE = frozenset({"epochs", "certify"})
"""Tables whose reads keep only the latest row per :data:`KEYS` (a resumed writer may repeat a row)."""

_STR, _F64, _I64, _BOOL = pa.large_string(), pa.float64(), pa.int64(), pa.bool_()


def _schema(*columns: tuple[str, pa.DataType]) -> pa.Schema:
    return pa.schema([*columns, ("schema_version", pa.int16()), ("written_ns", pa.int64())])


SCHEMAS: dict[str, pa.Schema] = {
    "runs": _schema(
        ("run_id", _STR), ("job_key", _STR), ("method", _STR), ("arch", _STR), ("dataset", _STR), ("sigma", _F64),
        ("teacher", _STR), ("teacher_arch", _STR), ("teacher_run_id", _STR), ("epochs", _I64), ("epochs_done", _I64),
        ("batch_size", _I64), ("seed", _I64), ("profile", _STR), ("device", _STR), ("torch_version", _STR),
        ("git_commit", _STR), ("config", _STR), ("env", _STR), ("train_seconds", _F64),
        ("teacher_train_seconds", _F64), ("world_size", _I64), ("train_device_seconds", _F64),
        ("teacher_dedicated", _BOOL), ("total_train_seconds", _F64), ("init_run_id", _STR),
        ("init_train_seconds", _F64), ("precision", _STR), ("channels_last", _BOOL),
        ("compile", _BOOL), ("teacher_precision", _STR), ("teacher_folded_batchnorms", _I64), ("sync_bn", _BOOL),
        ("tf32", _BOOL), ("warmup_seconds", _F64), ("status", _STR), ("error", _STR), ("start_time", _STR),
        ("end_time", _STR), ("updated", _F64)),
    "epochs": _schema(
        ("run_id", _STR), ("epoch", _I64), ("lr", _F64), ("loss", _F64), ("seconds", _F64), ("samples_per_s", _F64),
        ("optimizer_steps", _I64), ("noisy_test_acc", _F64), ("profiled", _BOOL), ("time", _STR),
        ("noisy_test_images", _I64), ("noisy_test_correct", _STR)),
    "certify": _schema(
        ("run_id", _STR), ("cert_id", _STR), ("idx", _I64), ("label", _I64), ("predict", _I64), ("radius", _F64),
        ("correct", _I64), ("seconds", _F64), ("n0", _I64), ("n", _I64), ("alpha", _F64), ("sigma", _F64),
        ("subset", _STR), ("seed", _I64), ("precision", _STR), ("noise_dtype", _STR), ("compile", _BOOL),
        ("batch", _I64), ("tf32", _BOOL), ("device", _STR), ("git_commit", _STR), ("source", _STR), ("time", _STR),
        ("procedure", _STR), ("transfer_from", _STR), ("n_p", _I64), ("alpha_zeta", _F64), ("disagreements", _I64),
        ("c_a", _I64), ("selection_count", _I64), ("n_a", _I64), ("n_counted", _I64), ("p_a_lower", _F64)),
    "certifications": _schema(
        ("key_run_id", _STR), ("key_n0", _I64), ("key_n", _I64), ("key_alpha", _F64), ("key_sigma", _F64),
        ("key_subset", _STR), ("key_precision", _STR), ("key_seed", _I64), ("cert_id", _STR), ("run_id", _STR),
        ("images", _I64), ("shard", _STR), ("tf32", _BOOL), ("status", _STR), ("images_done", _I64),
        ("error", _STR), ("updated", _F64), ("key_transfer_from", _STR), ("key_n_p", _I64), ("key_alpha_zeta", _F64)),
    "timing": _schema(
        ("method", _STR), ("arch", _STR), ("teacher_arch", _STR), ("sigma", _F64), ("batch_size", _I64),
        ("optimizer_steps_per_batch", _I64), ("hparams", _STR), ("hours_basis", _STR), ("timed_batches", _I64),
        ("repeats", _I64), ("fwd_bwd_passes", _F64), ("fwd_only_passes", _F64), ("seconds_per_batch", _F64),
        ("seconds_per_batch_min", _F64), ("seconds_per_batch_max", _F64), ("relative_spread", _F64),
        ("images_per_s", _F64), ("batches_per_epoch", _I64), ("epoch_seconds", _F64), ("recipe_epochs", _I64),
        ("recipe_hours", _F64), ("peak_memory_bytes", _I64), ("precision", _STR), ("compile", _BOOL),
        ("channels_last", _BOOL), ("tf32", _BOOL), ("teacher_precision", _STR), ("device", _STR),
        ("device_count", _I64), ("torch_version", _STR), ("cuda_version", _STR), ("git_commit", _STR),
        ("time", _STR), ("interleaved", _BOOL), ("rounds", _I64), ("round_seconds", _STR), ("batch_ratio", _F64),
        ("batch_ratio_low", _F64), ("batch_ratio_high", _F64), ("epoch_ratio", _F64), ("epoch_ratio_low", _F64),
        ("epoch_ratio_high", _F64), ("ratio_level", _F64), ("profile", _STR), ("rounds_max", _I64),
        ("ratio_target", _F64), ("protocol", _STR), ("measure", _STR), ("config", _STR), ("recipe", _STR),
        ("kernel_seconds_per_batch", _F64), ("kernel_busy_fraction", _F64)),
    "agreement": _schema(
        ("run_id", _STR), ("precision", _STR), ("compile", _BOOL), ("n", _I64), ("subset", _STR), ("seed", _I64),
        ("images", _I64), ("chosen_precision", _STR), ("reference", _STR), ("sigma", _F64), ("same_predict", _F64),
        ("radius_diff_mean", _F64), ("radius_diff_max", _F64), ("certified_both", _I64),
        ("seconds_per_image", _F64), ("reference_seconds_per_image", _F64), ("wall_seconds", _F64),
        ("device", _STR), ("git_commit", _STR), ("time", _STR)),
}
_SOURCE = __name__.replace(".", "/") + ".py"


def check_table(table: str) -> None:
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; tables: {', '.join(TABLES)}")


def run_id_of(cert_id: str) -> str:
    """The run a certification id belongs to: ``<run_id>@N<n>-<digest>``, or an imported log's name."""
    return cert_id.rsplit("@N", 1)[0] if "@N" in cert_id else IMPORT_PREFIX + cert_id


def conform(table: str, frame: pd.DataFrame, *, strict: bool = True) -> pa.Table:
    """``frame`` as an arrow table in ``table``'s schema types (no metadata), its columns in schema order.

    ``strict``: a column the schema lacks is a :class:`CrtBenchError` (appends); otherwise it is kept
    as it is (a legacy store being migrated may hold columns later versions dropped).
    """
    return conform_arrow(table, pa.Table.from_pandas(frame, preserve_index=False), strict=strict)


def conform_arrow(table: str, arrow: pa.Table, *, strict: bool = True) -> pa.Table:
    """:func:`conform` for rows already in arrow (legacy parts being migrated)."""
    check_table(table)
    schema = SCHEMAS[table]
    arrow = arrow.replace_schema_metadata(None)
    unknown = [name for name in arrow.column_names if schema.get_field_index(name) < 0]
    if unknown and strict:
        raise CrtBenchError(f"column {unknown[0]!r} is not in the schema of the {table!r} results table"
                            f"{' (nor ' + ', '.join(map(repr, unknown[1:])) + ')' if unknown[1:] else ''}; "
                            f"add it to SCHEMAS in {_SOURCE}")
    known = [field for field in schema if field.name in arrow.column_names]
    columns, fields = [], []
    for field in [*known, *(arrow.schema.field(name) for name in unknown)]:
        column = arrow.column(field.name)
        if column.type != field.type:
            try:
                column = column.cast(field.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
                raise CrtBenchError(f"column {field.name!r} of the {table!r} results table must be {field.type}; "
                                    f"got {column.type} ({err})") from None
        columns.append(column)
        fields.append(pa.field(field.name, field.type))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))


def renamed_columns(table: str, df: pd.DataFrame) -> pd.DataFrame:
    """Older rows' columns under their current names (:data:`RENAMED`); a row with both keeps the new value."""
    for old, new in RENAMED.get(table, {}).items():
        if old in df.columns:
            df = df.assign(**{new: df[old] if new not in df.columns else df[new].where(df[new].notna(), df[old])})
            df = df.drop(columns=old)
    return df


def order_columns(table: str, names: list[str]) -> list[str]:
    """``names`` in schema order, then the ones the schema does not list in their given order."""
    schema = SCHEMAS[table]
    known = sorted((n for n in names if schema.get_field_index(n) >= 0), key=schema.get_field_index)
    return known + [n for n in names if schema.get_field_index(n) < 0]


def read_version(table_dir: Path, table: str) -> int:
    """The version in ``table_dir/_schema.json`` (:data:`LEGACY_VERSION` when absent).

    A version newer than this code's is a :class:`CrtBenchError` (:func:`crt_bench.store.parts.ensure_version`
    writes the file).
    """
    check_table(table)
    path = Path(table_dir) / SCHEMA_FILE
    try:
        found = int(json.loads(path.read_text())["schema_version"])
    except FileNotFoundError:
        return LEGACY_VERSION
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CrtBenchError(f"results file {path} is unreadable ({err}); move it aside to continue") from None
    if found > SCHEMA_VERSION[table]:
        raise CrtBenchError(f"the {table!r} table in {table_dir} has schema version {found}, written by a newer "
                            f"crt-bench (this one reads up to {SCHEMA_VERSION[table]}); upgrade crt-bench to use "
                            "these results")
    return found
