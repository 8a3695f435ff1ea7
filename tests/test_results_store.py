"""The append-only parquet store: round trips, run state, atomic parts, corruption, concurrent writers."""
from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch

from crt_bench.core.atomic import atomic_torch_save, atomic_write_bytes
from crt_bench.core.errors import CrtBenchError
from crt_bench.store.bench import write_bench_table
from crt_bench.store.store import ResultsStore


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` (parts sit in partition folders), relative, temporary ones included."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def test_append_read_round_trip(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    assert store.read("certify").empty
    first = pd.DataFrame({"run_id": "r", "idx": [0, 1], "radius": [0.5, 0.0], "label": [3, 7], "subset": ["a", "b"]})
    store.append("certify", first)
    store.append("certify", [{"run_id": "r", "idx": 2, "radius": 1.25, "label": 1, "subset": "c"}])
    back = store.read("certify").sort_values("idx").reset_index(drop=True)
    assert back["idx"].tolist() == [0, 1, 2]
    assert back["radius"].tolist() == [0.5, 0.0, 1.25]
    assert back["label"].tolist() == [3, 7, 1]
    assert back["subset"].tolist() == ["a", "b", "c"]
    assert back["idx"].dtype == "int64" and back["radius"].dtype == "float64"
    parts = list((tmp_path / "tables" / "certify" / "run_id=r").glob("*.parquet"))
    assert len(parts) == 2, "each append is its own part"


def test_unknown_table_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown table"):
        ResultsStore(tmp_path).append("nonsense", [{"a": 1}])


def test_runs_returns_latest_row_per_run(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    # Written out of order on purpose: "latest" is by the updated stamp, not by file order.
    store.append("runs", [{"run_id": "a", "status": "finished", "updated": 3.0}])
    store.append("runs", [{"run_id": "b", "status": "running", "updated": 2.0}])
    store.append("runs", [{"run_id": "a", "status": "running", "updated": 1.0},
                          {"run_id": "c", "status": "failed", "updated": 5.0}])
    runs = store.runs()
    assert sorted(runs["run_id"]) == ["a", "b", "c"]
    status = dict(zip(runs["run_id"], runs["status"]))
    assert status == {"a": "finished", "b": "interrupted", "c": "failed"}, "b's process (lock) is gone"
    assert store.read("runs")["status"].tolist().count("running") == 2, "the rows themselves are as written"
    assert store.get_run("a")["status"] == "finished"
    with pytest.raises(CrtBenchError, match="no run 'zzz'"):
        store.get_run("zzz")


def test_runs_of_empty_store_is_empty(tmp_path: Path) -> None:
    assert ResultsStore(tmp_path / "nothing").runs().empty


def test_crash_during_write_leaves_no_part_and_no_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)
    store.append("epochs", [{"run_id": "r", "epoch": 1, "loss": 2.0}])
    folder = tmp_path / "tables" / "epochs"
    before = _files(folder)
    real_write = pq.write_table

    def crash(table, where, *args, **kwargs):
        real_write(table, where, *args, **kwargs)
        with open(where, "r+b") as f:  # leave a half-written file behind, as a crash would
            f.truncate(max(1, Path(where).stat().st_size // 2))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError, match="simulated"):
        store.append("epochs", [{"run_id": "r", "epoch": 2, "loss": 1.0}])
    monkeypatch.undo()

    assert _files(folder) == before, "neither a .parquet part nor a temporary file may remain"
    back = store.read("epochs")
    assert back["epoch"].tolist() == [1]
    store.append("epochs", [{"run_id": "r", "epoch": 2, "loss": 1.0}])  # the store still works
    assert sorted(store.read("epochs")["epoch"]) == [1, 2]


def test_interrupt_during_write_also_cleans_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)

    def interrupted(table, where, *args, **kwargs):
        Path(where).write_bytes(b"PAR1 partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(pq, "write_table", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.append("runs", [{"run_id": "r", "status": "running", "updated": 1.0}])
    monkeypatch.undo()
    assert _files(tmp_path / "tables" / "runs") == ["_schema.json"], "no part, no temporary file"
    assert store.runs().empty


def test_corrupt_part_names_the_file(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    (good,) = store.append("certify", [{"run_id": "r", "idx": 0, "radius": 0.5}])
    bad = good.parent / "zzzz-corrupt.parquet"
    bad.write_bytes(b"this is not parquet at all" * 10)
    with pytest.raises(CrtBenchError) as info:
        store.read("certify")
    assert str(bad) in str(info.value)
    # A truncated real part is just as unreadable.
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CrtBenchError, match="zzzz-corrupt.parquet"):
        store.read("certify")


def test_concurrent_thread_appends_lose_nothing(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    n_threads, per_thread = 8, 10
    barrier = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                store.append("timing", [{"repeats": t, "timed_batches": i}])
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    rows = store.read("timing")
    assert len(rows) == n_threads * per_thread
    assert set(zip(rows["repeats"], rows["timed_batches"])) == {(t, i) for t in range(n_threads)
                                                                for i in range(per_thread)}


def _process_writer(root: str, writer: int, count: int) -> None:
    store = ResultsStore(root)
    for i in range(count):
        store.append("timing", [{"arch": f"arch{writer}", "repeats": writer, "timed_batches": i}])


def test_concurrent_process_appends_lose_nothing(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_process_writer, args=(str(tmp_path), w, 15)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    for p in procs:
        if p.is_alive():  # never leave a stuck writer behind
            p.kill()
            p.join()
    assert [p.exitcode for p in procs] == [0] * 4
    rows = ResultsStore(tmp_path).read("timing")
    assert len(rows) == 60
    assert set(zip(rows["repeats"], rows["timed_batches"])) == {(w, i) for w in range(4) for i in range(15)}
    assert [f for f in _files(tmp_path / "tables" / "timing") if not f.endswith(".parquet")] == ["_schema.json"]


def test_atomic_file_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(target, b"one")
    assert target.read_bytes() == b"one"
    atomic_torch_save({"w": torch.arange(3)}, tmp_path / "sub" / "m.pt")
    assert torch.equal(torch.load(tmp_path / "sub" / "m.pt", weights_only=True)["w"], torch.arange(3))

    def broken(obj, path):
        Path(path).write_bytes(b"half")
        raise RuntimeError("crash while saving")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError):
        atomic_torch_save({"w": 1}, tmp_path / "sub" / "m.pt")
    # The previous file is intact and no temporary file is left.
    assert torch.equal(torch.load(tmp_path / "sub" / "m.pt", weights_only=True)["w"], torch.arange(3))
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["f.bin", "m.pt"]


def test_read_returns_parts_in_write_order(tmp_path: Path) -> None:
    """Many parts within one second still come back in the order they were written."""
    store = ResultsStore(tmp_path)
    for i in range(25):
        store.append("epochs", [{"run_id": "r", "epoch": i + 1}])
    assert store.read("epochs")["epoch"].tolist() == list(range(1, 26))


def test_runs_tie_on_updated_keeps_the_later_write(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    for status in ("running", "interrupted", "running", "finished"):
        store.append("runs", [{"run_id": "r", "status": status, "updated": 7.0}])
    assert store.get_run("r")["status"] == "finished"


def test_bench_table_is_written_whole_under_a_timestamped_name(tmp_path) -> None:
    rows = [{"arch": "resnet20", "variant": "engine", "images_per_s": 569.4},
            {"arch": "resnet20", "variant": "plain", "images_per_s": 498.8}]
    path = write_bench_table(rows, tmp_path / "bench", "train")
    assert path.parent == tmp_path / "bench" and path.name.startswith("train-") and path.suffix == ".parquet"
    back = pd.read_parquet(path)
    assert back.to_dict("records") == rows
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
