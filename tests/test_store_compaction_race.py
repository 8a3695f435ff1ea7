"""Readers that survive compaction: a part removed by a compaction between a reader's listing and its reading
is listed again and read from the merged part (which holds its rows), never an "unreadable" error."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from crt_bench.core.errors import CrtBenchError
from crt_bench.store import parts
from crt_bench.store.compact import compact_partition
from crt_bench.store.parts import parts_in, partition_dir, read_parts, write_part


def _epochs(run: str, first: int, count: int) -> pd.DataFrame:
    return pd.DataFrame({"run_id": [run] * count, "epoch": range(first, first + count),
                         "loss": [float(e) for e in range(first, first + count)]})


def test_a_part_compacted_between_listing_and_reading_is_read_from_the_merged_part(tmp_path: Path, monkeypatch):
    table = tmp_path / "epochs"
    for epoch in range(1, 6):
        write_part(table, "epochs", _epochs("r", epoch, 1))
    real, calls = parts.read_arrow, []

    def compaction_in_between(table_dir, name, files, *args, **kwargs):
        calls.append(list(files))
        if len(calls) == 1:  # the reader has listed five parts; a finishing job compacts them now
            assert compact_partition(table, "epochs", "r") == 5
        return real(table_dir, name, files, *args, **kwargs)

    monkeypatch.setattr(parts, "read_arrow", compaction_in_between)
    df = read_parts(table, "epochs")
    assert list(df["epoch"]) == [1, 2, 3, 4, 5]
    assert len(calls) == 2 and len(calls[0]) == 5 and len(calls[1]) == 1  # listed again: the merged part


def test_an_unreadable_part_that_is_still_there_is_still_named(tmp_path: Path) -> None:
    table = tmp_path / "epochs"
    write_part(table, "epochs", _epochs("r", 1, 2))
    (part,) = parts_in(partition_dir(table, "epochs", "r"))
    part.write_bytes(b"not parquet")
    with pytest.raises(CrtBenchError, match=f"results file {part} is unreadable"):
        read_parts(table, "epochs")


def test_readers_racing_a_compacting_writer_see_every_row_once(tmp_path: Path) -> None:
    table = tmp_path / "epochs"
    write_part(table, "epochs", _epochs("r", 1, 1))
    stop, errors, seen = threading.Event(), [], []

    def writer() -> None:  # a job appending an epoch at a time and compacting after each
        epoch = 2
        while not stop.is_set():
            write_part(table, "epochs", _epochs("r", epoch, 1))
            write_part(table, "epochs", _epochs("r", epoch + 1, 1))
            compact_partition(table, "epochs", "r")
            epoch += 2

    def reader() -> None:
        while not stop.is_set():
            try:
                epochs = list(read_parts(table, "epochs")["epoch"])
            except Exception as err:  # noqa: BLE001 - the race this test is about
                errors.append(err)
                return
            seen.append(epochs)

    threads = [threading.Thread(target=writer)] + [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    assert not errors, errors[0]
    assert len(seen) > 20 and max(len(s) for s in seen) > 10
    for epochs in seen:  # each read: a prefix of the epochs, no row lost or doubled
        assert epochs == list(range(1, len(epochs) + 1))
