"""The partitioned store: pruning, schema checks, legacy reads, order and dedupe, compaction, lock-derived status."""
from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from crt_bench.core.errors import CrtBenchError
from crt_bench.store import compact as compact_mod
from crt_bench.store.compact import compact_partition, compact_store, migrate_legacy
from crt_bench.store.parts import NULL_DIR, parts_in, read_parts, write_part
from crt_bench.store.schema import SCHEMA_VERSION, TABLES, renamed_columns, run_id_of
from crt_bench.store.locks import lock_is_held
from crt_bench.store.status import derive_status

FIXED_TABLES = Path(__file__).parent / "data" / "fixed_store" / "tables"


def _cert(run_id: str, idx: list[int], radius: float = 0.5, cert_id: str | None = None) -> pd.DataFrame:
    return pd.DataFrame({"run_id": run_id, "cert_id": cert_id or f"{run_id}@N100-abcd", "idx": idx,
                         "radius": radius, "correct": 1})


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.parquet"))


def _today_read(folder: Path, keys: list[str]) -> pd.DataFrame:
    """How crt-bench read a flat table before the partitioned store."""
    frames = [f for f in (pq.read_table(p).to_pandas() for p in sorted(folder.glob("*.parquet"))) if not f.empty]
    df = pd.concat(frames, ignore_index=True)
    return df[~df.duplicated(keys, keep="last")].reset_index(drop=True) if keys else df


def test_parts_go_to_quoted_partition_folders_without_the_partition_column(tmp_path: Path) -> None:
    table = tmp_path / "certify"
    written = write_part(table, "certify", pd.concat([_cert("runs/a b", [0, 1]), _cert("import:pub", [0], cert_id="pub")]))
    assert sorted(p.parent.name for p in written) == ["run_id=import%3Apub", "run_id=runs%2Fa%20b"]
    assert all("run_id" not in pq.read_schema(p).names for p in written)
    assert json.loads((table / "_schema.json").read_text()) == {"schema_version": SCHEMA_VERSION["certify"]}
    back = read_parts(table, "certify", where={"run_id": "runs/a b"})
    assert back["run_id"].tolist() == ["runs/a b"] * 2 and back["idx"].tolist() == [0, 1]
    assert back.columns.tolist() == ["run_id", "cert_id", "idx", "radius", "correct"], "absent columns stay absent"
    assert read_parts(table, "certify", where={"run_id": ["import:pub", "nothing"]})["cert_id"].tolist() == ["pub"]
    assert read_parts(table, "certify", where={"run_id": "nothing"}).empty
    assert run_id_of("runs/a b@N100-abcd") == "runs/a b" and run_id_of("pub") == "import:pub"


def test_a_query_about_one_run_opens_only_its_partition(tmp_path: Path) -> None:
    table = tmp_path / "certify"
    write_part(table, "certify", _cert("a", [0, 1]))
    (other,) = write_part(table, "certify", _cert("b", [0]))
    garbage = other.parent / "20990101T000000.000000000-garbage.parquet"
    garbage.write_bytes(b"not a parquet file")
    assert read_parts(table, "certify", where={"run_id": "a"})["idx"].tolist() == [0, 1]
    with pytest.raises(CrtBenchError, match=f"results file {garbage} is unreadable.*move it aside"):
        read_parts(table, "certify")


def test_other_conditions_filter_the_scan(tmp_path: Path) -> None:
    table = tmp_path / "certify"
    write_part(table, "certify", pd.concat([_cert("a", [0, 1], cert_id="a@N1-x"), _cert("a", [0], cert_id="a@N2-y")]))
    write_part(table, "certify", pd.DataFrame({"run_id": ["a"], "cert_id": ["a@N3-z"], "idx": [5]}))
    assert read_parts(table, "certify", where={"run_id": "a", "cert_id": "a@N2-y"})["idx"].tolist() == [0]
    assert read_parts(table, "certify", where={"idx": [1, 5]})["cert_id"].tolist() == ["a@N1-x", "a@N3-z"]
    assert read_parts(table, "certify", where={"radius": None})["cert_id"].tolist() == ["a@N3-z"]
    assert read_parts(table, "certify", where={"seed": 3}).empty, "a column no part has matches no value"
    assert read_parts(table, "certify", columns=["idx"])["idx"].tolist() == [0, 1, 0, 5]


def test_rows_without_a_partition_value_read_back_as_missing(tmp_path: Path) -> None:
    table = tmp_path / "timing"
    (part,) = write_part(table, "timing", [{"method": "gaussian", "seconds_per_batch": 0.5}])
    assert part.parent.name == f"arch={NULL_DIR}"
    back = read_parts(table, "timing", where={"arch": None})
    assert back["method"].tolist() == ["gaussian"] and back["arch"].isna().all()


def test_unknown_column_is_refused_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(CrtBenchError, match=r"column 'colour' is not in the schema of the 'runs'.*crt_bench/store/schema.py"):
        write_part(tmp_path / "runs", "runs", [{"run_id": "r", "status": "running", "colour": "red"}])
    assert _files(tmp_path) == []


def test_columns_are_cast_to_the_schema_types(tmp_path: Path) -> None:
    table = tmp_path / "epochs"
    (part,) = write_part(table, "epochs", [{"run_id": "r", "epoch": 1, "loss": 2, "profiled": None}])
    schema = pq.read_schema(part)
    assert str(schema.field("loss").type) == "double" and str(schema.field("profiled").type) == "bool"
    assert str(schema.field("schema_version").type) == "int16" and str(schema.field("written_ns").type) == "int64"
    with pytest.raises(CrtBenchError, match="column 'epoch' of the 'epochs' results table must be int64"):
        write_part(table, "epochs", [{"run_id": "r", "epoch": "first"}])


def test_a_table_of_a_newer_crt_bench_is_refused(tmp_path: Path) -> None:
    table = tmp_path / "runs"
    write_part(table, "runs", [{"run_id": "r", "status": "running"}])
    (table / "_schema.json").write_text(json.dumps({"schema_version": SCHEMA_VERSION["runs"] + 1}))
    for action in (lambda: write_part(table, "runs", [{"run_id": "r"}]), lambda: read_parts(table, "runs")):
        with pytest.raises(CrtBenchError, match="written by a newer crt-bench"):
            action()


def test_a_flat_store_of_earlier_crt_bench_reads_as_it_did(tmp_path: Path) -> None:
    shutil.copytree(FIXED_TABLES, tmp_path / "tables")
    for table, keys in {"runs": [], "epochs": ["run_id", "epoch"], "certify": ["cert_id", "idx"],
                        "certifications": [], "timing": []}.items():
        today = renamed_columns(table, _today_read(tmp_path / "tables" / table, keys))  # timing's kind: hours_basis
        pd.testing.assert_frame_equal(read_parts(tmp_path / "tables" / table, table)[today.columns.tolist()], today)
    some = _today_read(tmp_path / "tables" / "certify", ["cert_id", "idx"])
    run = some["run_id"].iloc[-1]
    assert read_parts(tmp_path / "tables" / "certify", "certify", where={"run_id": run})["idx"].tolist() == \
        some.loc[some["run_id"] == run, "idx"].tolist()


def test_rows_come_back_in_write_order_with_the_latest_row_per_key(tmp_path: Path) -> None:
    table = tmp_path / "certify"
    write_part(table, "certify", _cert("b", [0, 1], radius=0.1))
    write_part(table, "certify", _cert("a", [0], radius=0.2))
    write_part(table, "certify", _cert("b", [1], radius=0.3))  # a resumed writer repeats image 1
    rows = read_parts(table, "certify")
    assert list(zip(rows["run_id"], rows["idx"], rows["radius"])) == [("b", 0, 0.1), ("a", 0, 0.2), ("b", 1, 0.3)]
    raw = read_parts(table, "certify", raw=True)
    assert len(raw) == 4 and raw["written_ns"].is_monotonic_increasing
    assert set(raw["schema_version"]) == {SCHEMA_VERSION["certify"]}
    assert "written_ns" not in rows.columns and "schema_version" not in rows.columns


def test_compaction_keeps_the_rows_and_spares_a_part_written_meanwhile(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    table = tmp_path / "runs"
    for status in ("running", "interrupted", "running", "finished"):
        write_part(table, "runs", [{"run_id": "r", "status": status, "updated": 1.0}])
    write_part(table, "runs", [{"run_id": "other", "status": "running"}])
    before = read_parts(table, "runs", raw=True)
    real_read = compact_mod.read_arrow

    def read_then_append(*args, **kwargs):  # another writer appends after the snapshot was taken
        rows = real_read(*args, **kwargs)
        write_part(table, "runs", [{"run_id": "r", "status": "late"}])
        return rows

    monkeypatch.setattr(compact_mod, "read_arrow", read_then_append)
    assert compact_partition(table, "runs", "r") == 4
    monkeypatch.undo()
    after = read_parts(table, "runs", raw=True)
    pd.testing.assert_frame_equal(after.iloc[:-1], before.iloc[[0, 1, 2, 3, 4]].reset_index(drop=True))
    assert after["status"].iloc[-1] == "late"
    assert len(parts_in(table / "run_id=r")) == 2, "the merged part and the one written meanwhile"
    assert compact_partition(table, "runs", "other") == 0, "one part: nothing to do"


def test_compaction_of_a_deduplicated_table_keeps_what_reads_see(tmp_path: Path) -> None:
    table = tmp_path / "certify"
    for i in range(5):
        write_part(table, "certify", _cert("a", [i, max(i - 1, 0)], radius=float(i)))
    before = read_parts(table, "certify")
    assert compact_partition(table, "certify", "a") == 5
    pd.testing.assert_frame_equal(read_parts(table, "certify"), before)
    assert len(read_parts(table, "certify", raw=True)) == len(before) == 5


def test_compaction_that_fails_keeps_every_part(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    table = tmp_path / "epochs"
    for epoch in (1, 2, 3):
        write_part(table, "epochs", [{"run_id": "r", "epoch": epoch, "loss": 1.0 / epoch}])
    files = _files(table)

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(compact_mod, "write_arrow", full)
    with caplog.at_level(logging.WARNING, logger=compact_mod.__name__):
        assert compact_partition(table, "epochs", "r") == 0
    assert _files(table) == files
    assert "No space left on device" in caplog.text and "kept" in caplog.text


def test_compact_store_migrates_a_flat_store_and_keeps_every_row(tmp_path: Path) -> None:
    shutil.copytree(FIXED_TABLES, tmp_path / "tables")
    before = {t: read_parts(tmp_path / "tables" / t, t, raw=True) for t in TABLES}
    count_before, count_after = compact_store(tmp_path)
    assert count_before == len(_files(FIXED_TABLES)) and count_after == len(_files(tmp_path / "tables"))
    assert count_after < count_before
    for table in TABLES:
        folder = tmp_path / "tables" / table
        if not (FIXED_TABLES / table).is_dir():  # a table newer than the store (agreement): read as empty
            assert before[table].empty and read_parts(folder, table).empty
            continue
        assert parts_in(folder) == [], "no flat part left"
        after = read_parts(folder, table, raw=True)
        expected = before[table]
        keys = {"epochs": ["run_id", "epoch"], "certify": ["cert_id", "idx"]}.get(table)
        if keys:  # compaction keeps the latest row per key only
            expected = expected[~expected.duplicated(keys, keep="last")]
        pd.testing.assert_frame_equal(after, expected.reset_index(drop=True)[after.columns.tolist()])
        assert set(after["schema_version"]) == {1}
        assert all(len(parts_in(f)) == 1 for f in folder.iterdir() if f.is_dir())


def test_migrate_legacy_alone_moves_the_flat_parts(tmp_path: Path) -> None:
    shutil.copytree(FIXED_TABLES / "runs", tmp_path / "runs")
    legacy = parts_in(tmp_path / "runs")
    assert migrate_legacy(tmp_path / "runs", "runs") == len(legacy)
    assert parts_in(tmp_path / "runs") == [] and len(_files(tmp_path / "runs")) >= 1


HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
print("held", flush=True)
time.sleep(60)
"""


def test_lock_is_held_only_while_a_process_holds_it(tmp_path: Path) -> None:
    path = tmp_path / "run.lock"
    assert not lock_is_held(path), "a missing lock file is free"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert lock_is_held(path)
    finally:
        holder.kill()
        holder.wait()
    assert not lock_is_held(path), "the kernel drops the lock of a killed process"
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert lock_is_held(path), "held by this very process, on another descriptor"
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the check let go of everything it took
    finally:
        os.close(fd)


def test_running_rows_with_a_free_lock_read_interrupted(tmp_path: Path) -> None:
    held = tmp_path / "held" / "run.lock"
    held.parent.mkdir()
    frame = pd.DataFrame({"run_id": ["held", "gone", "never", "done", "unknown"],
                          "status": ["running", "running", "running", "finished", "running"]})
    fd = os.open(held, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        (tmp_path / "gone").mkdir()
        (tmp_path / "gone" / "run.lock").touch()
        derived = derive_status(frame, lambda row: None if row["run_id"] == "unknown"
                                else tmp_path / row["run_id"] / "run.lock")
    finally:
        os.close(fd)
    assert derived["status"].tolist() == ["running", "interrupted", "interrupted", "finished", "running"]
    assert frame["status"].tolist()[:3] == ["running"] * 3, "the input frame is left as it was"


def test_rows_of_one_append_across_partitions_keep_their_order(tmp_path: Path) -> None:
    table = tmp_path / "certify"
    write_part(table, "certify", pd.concat([_cert("b", [0, 1]), _cert("a", [0]), _cert("b", [2])]))
    write_part(table, "certify", _cert("a", [1]))
    rows = read_parts(table, "certify")
    assert list(zip(rows["run_id"], rows["idx"])) == [("b", 0), ("b", 1), ("a", 0), ("b", 2), ("a", 1)]
    legacy = tmp_path / "legacy" / "certify"
    legacy.mkdir(parents=True)
    pq.write_table(pq.read_table(next((table / "run_id=b").glob("*.parquet"))).slice(0, 0), legacy / "0.parquet")
    pd.concat([_cert("b", [0]), _cert("a", [0]), _cert("b", [1])]).to_parquet(legacy / "1.parquet", index=False)
    flat = read_parts(legacy, "certify")
    assert list(zip(flat["run_id"], flat["idx"])) == [("b", 0), ("a", 0), ("b", 1)]
    migrate_legacy(legacy, "certify")
    pd.testing.assert_frame_equal(read_parts(legacy, "certify"), flat)


def test_rows_written_under_a_renamed_column_read_back_under_its_new_name(tmp_path: Path) -> None:
    """A certify row's ``procedure`` was ``kind`` before schema 5: old parts, new parts and their compaction all
    read as ``procedure``, with the old values; a filter and a column selection on the new name reach old rows."""
    import pyarrow as pa

    from crt_bench.store.parts import write_arrow

    table_dir = tmp_path / "certify"
    old = pa.Table.from_pandas(_cert("r1", [0, 1]).assign(kind="transfer", schema_version=4, written_ns=[1, 2])
                               .astype({"schema_version": "int16"}), preserve_index=False)
    write_arrow(table_dir, "certify", old)
    write_part(table_dir, "certify", _cert("r1", [2]).assign(procedure="certify"))
    for compacted in (False, True):  # two parts (old and new columns), then one holding both columns
        assert len(_files(table_dir)) == (1 if compacted else 2)
        rows = read_parts(table_dir, "certify").sort_values("idx")
        assert "kind" not in rows and list(rows["procedure"]) == ["transfer", "transfer", "certify"]
        assert list(read_parts(table_dir, "certify", where={"idx": [0, 1]}, columns=["procedure"])["procedure"]) \
            == ["transfer", "transfer"]
        compact_partition(table_dir, "certify", "r1")
    with pytest.raises(CrtBenchError, match="'kind' is not in the schema"):  # a writer must use the new name
        write_part(table_dir, "certify", _cert("r3", [0]).assign(kind="certify"))
