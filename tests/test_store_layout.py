"""The store as its readers use it: queries that open one run's partition, the status derived from the
lock, the lock's retry, the grid's one read per poll, a full disk, and ``crt-bench compact``."""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from conftest import fast_config
from test_cli import cli

from crt_bench.certify import resumable
from crt_bench.config.certify import CertifyConfig
from crt_bench.core import atomic
from crt_bench.core.errors import CrtBenchError, DiskFull
from crt_bench.grid.execute import _decide
from crt_bench.grid.inline import InlineExecutor
from crt_bench.grid.jobs import Job
from crt_bench.grid.runner import run_grid
from crt_bench.models.files import CHECKPOINT_FILE
from crt_bench.store import locks
from crt_bench.store.locks import ProcessLock, cert_lock_name, run_lock
from crt_bench.store.store import ResultsStore
from crt_bench.train.trainer import Trainer, resume_run

FIXED_TABLES = Path(__file__).parent / "data" / "fixed_store" / "tables"
CCFG = CertifyConfig(n0=8, n=32, alpha=0.001, batch=2, subset="range:0:6")  # a group per image


def _run_rows(store: ResultsStore, run_id: str, status: str, job_key: str = "", updated: float = 1.0) -> None:
    store.append("runs", [{"run_id": run_id, "job_key": job_key, "status": status, "updated": updated}])


def _state(store: ResultsStore, run_id: str, cert_id: str, status: str, shard: str = "") -> None:
    store.append("certifications", [{"cert_id": cert_id, "run_id": run_id, "shard": shard, "status": status,
                                     "images": 10, "images_done": 0, "updated": 1.0}])


def test_queries_about_one_run_open_only_its_partition(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    for run in ("a", "b"):
        _run_rows(store, run, "running", job_key=f"job-{run}")
        _run_rows(store, run, "finished", job_key=f"job-{run}", updated=2.0)
        store.append("certify", [{"run_id": run, "cert_id": f"{run}@N32-0000abcd", "idx": i, "radius": 0.5}
                                 for i in range(3)])
        _state(store, run, f"{run}@N32-0000abcd", "finished")
    for table in ("runs", "certify", "certifications"):
        (tmp_path / "tables" / table / "run_id=b" / "20990101T000000.000000000-garbage.parquet").write_bytes(b"junk")
    assert store.get_run("a")["status"] == "finished"
    assert store.certification_rows("a@N32-0000abcd")["idx"].tolist() == [0, 1, 2]
    assert store.certification_states(run_id="a")["status"].tolist() == ["finished"]
    assert store.latest("certify", where={"run_id": "a"})["idx"].tolist() == [0, 1, 2]
    for query in (store.runs, lambda: store.read("certify"), store.certification_states):
        with pytest.raises(CrtBenchError, match="garbage.parquet is unreadable"):
            query()
    with pytest.raises(CrtBenchError, match="no certification 'a@N32-ffffffff'"):
        store.certification_rows("a@N32-ffffffff")
    assert store.certification_rows("a@N32-ffffffff", missing_ok=True).empty


def test_finished_runs_by_job_key(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    _run_rows(store, "old", "finished", job_key="k", updated=1.0)
    _run_rows(store, "new", "running", job_key="k", updated=2.0)
    _run_rows(store, "new", "finished", job_key="k", updated=3.0)
    _run_rows(store, "other", "failed", job_key="j", updated=4.0)
    assert store.finished_runs() == {"k": "new"}
    assert store.finished_run("k") == "new" and store.finished_run("j") is None
    assert store.finished_run("nothing") is None and ResultsStore(tmp_path / "empty").finished_runs() == {}


def test_a_running_row_whose_lock_is_free_reads_interrupted(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    for run in ("alive", "gone"):
        store.run_dir(run).mkdir(parents=True)
        _run_rows(store, run, "running")
        _state(store, run, f"{run}@N32-0000abcd", "running")
    _state(store, "gone", "gone@N32-0000abcd", "running", shard="0/2")  # shards' rows are not the whole
    with run_lock(store.run_dir("alive"), "alive"), \
            ProcessLock(store.certification_lock("alive", "alive@N32-0000abcd"), "certification"):
        runs = store.runs().set_index("run_id")["status"].to_dict()
        states = store.certification_states().set_index("cert_id")["status"].to_dict()
    assert runs == {"alive": "running", "gone": "interrupted"}
    assert states == {"alive@N32-0000abcd": "running", "gone@N32-0000abcd": "interrupted"}
    assert store.get_run("alive")["status"] == "interrupted", "its lock was released: its process is 'gone'"
    assert store.read("runs")["status"].tolist() == ["running", "running"], "the rows stay as written"
    assert store.certification_lock("alive", "alive@N32-0000abcd").name == cert_lock_name("alive@N32-0000abcd")
    assert store.certification_lock("model.pt", "model.pt@N32-0000abcd").parent == tmp_path / "locks"


def test_the_grid_resumes_a_run_whose_process_is_gone(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path)
    job = Job("gaussian", "tiny_cnn")
    _run_rows(store, "stale", "running", job_key=job.key)
    (store.run_dir("stale")).mkdir(parents=True)
    (store.run_dir("stale") / CHECKPOINT_FILE).write_bytes(b"a checkpoint")
    assert store.runs(where={"job_key": job.key})["status"].tolist() == ["interrupted"]
    assert _decide(job, store, CHECKPOINT_FILE) == ("resume", "stale")


def test_a_writer_waits_out_a_readers_instant_shared_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "run.lock"
    reader = os.open(path, os.O_RDONLY | os.O_CREAT)
    fcntl.flock(reader, fcntl.LOCK_SH | fcntl.LOCK_NB)  # a reader's lock_is_held, caught in the middle
    pauses: list[float] = []

    def reader_lets_go(seconds: float) -> None:
        pauses.append(seconds)
        fcntl.flock(reader, fcntl.LOCK_UN)

    monkeypatch.setattr(locks.time, "sleep", reader_lets_go)
    try:
        with ProcessLock(path, "run r") as lock:
            assert lock.held and pauses == [locks.ACQUIRE_PAUSE_S]
    finally:
        os.close(reader)
    monkeypatch.setattr(locks.time, "sleep", lambda seconds: pauses.append(seconds))
    with ProcessLock(path, "run r"):
        with pytest.raises(locks.LockHeld, match="run r is being driven by another process"):
            ProcessLock(path, "run r").acquire()
    assert len(pauses) == 1 + locks.ACQUIRE_TRIES - 1, "a writer's lock is refused after every try"


def test_the_grid_reads_the_store_once_however_many_jobs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)
    jobs = [Job("gaussian", "tiny_cnn", sigma=s) for s in (0.12, 0.25, 0.5, 1.0)]
    for i, job in enumerate(jobs):
        _run_rows(store, f"r{i}", "finished", job_key=job.key)
        _state(store, f"r{i}", f"r{i}@N32-0000abcd", "finished")
    reads: list[str] = []
    real_read = ResultsStore.read

    def counted(self, table, **kwargs):
        reads.append(table)
        return real_read(self, table, **kwargs)

    monkeypatch.setattr(ResultsStore, "read", counted)
    status = run_grid(jobs, tmp_path, InlineExecutor(), poll_s=0)
    assert status["state"].tolist() == ["skipped (finished)"] * 4
    assert sorted(reads) == ["certifications", "runs"]


def test_a_full_disk_removes_the_partial_part_and_keeps_what_was_written(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)
    store.append("epochs", [{"run_id": "r", "epoch": 1, "loss": 1.0}])
    real_write = pq.write_table

    def full(table, where, *args, **kwargs):
        real_write(table, where, *args, **kwargs)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full)
    with pytest.raises(DiskFull, match=r"disk full writing .*run_id=r/.*\.parquet") as info:
        store.append("epochs", [{"run_id": "r", "epoch": 2, "loss": 0.5}])
    monkeypatch.undo()
    assert info.value.exit_code == 1 and isinstance(info.value.__cause__, OSError)
    assert [p.name for p in (tmp_path / "tables" / "epochs" / "run_id=r").iterdir()] == \
        [p.name for p in (tmp_path / "tables" / "epochs" / "run_id=r").glob("*.parquet")], "no temporary file left"
    assert store.read("epochs")["epoch"].tolist() == [1]


def test_torch_saves_failing_on_a_nearly_full_disk_are_disk_full(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def failed(obj, path):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos: file write failed")

    monkeypatch.setattr(atomic.torch, "save", failed)
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(100, 100, 1024))
    with pytest.raises(DiskFull, match="model.pt"):
        atomic.atomic_torch_save({}, tmp_path / "model.pt")
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(1 << 40, 0, 1 << 40))
    with pytest.raises(RuntimeError, match="file write failed"):  # plenty of space: some other failure
        atomic.atomic_torch_save({}, tmp_path / "model.pt")
    assert list(tmp_path.iterdir()) == []


def _full_at(monkeypatch: pytest.MonkeyPatch, should_fail) -> None:
    real = atomic.atomic_replace

    def write(path: Path, writer):
        if should_fail(path):
            raise DiskFull(path)
        return real(path, writer)

    monkeypatch.setattr(atomic, "atomic_replace", write)


def test_a_run_stopped_by_a_full_disk_says_what_it_kept_and_resumes(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    store = ResultsStore(tmp_path)
    saves: list[Path] = []

    def second_checkpoint(path: Path) -> bool:
        saves.extend([path] if path.name == CHECKPOINT_FILE else [])
        return len(saves) == 2 and path.name == CHECKPOINT_FILE

    _full_at(monkeypatch, second_checkpoint)
    trainer = Trainer(fast_config(), store, progress=False)
    with pytest.raises(DiskFull) as info:
        trainer.run()
    monkeypatch.undo()
    run_id = trainer.run_id
    assert str(info.value) == (f"disk full writing {store.run_dir(run_id) / CHECKPOINT_FILE}: run {run_id} keeps "
                               f"epochs 1..1 (checkpoint of epoch 1); free space, then `crt-bench run --resume {run_id}`")
    assert store.get_run(run_id)["status"] == "interrupted" and store.read("epochs")["epoch"].tolist() == [1]
    assert resume_run(run_id, store, progress=False) == run_id
    assert store.get_run(run_id)["status"] == "finished" and store.read("epochs")["epoch"].tolist() == [1, 2]
    for table in ("runs", "epochs"):  # a finished run's parts are compacted into one
        assert len(list((tmp_path / "tables" / table / f"run_id={run_id}").glob("*.parquet"))) == 1


def test_a_certification_stopped_by_a_full_disk_says_what_it_kept(store_copy,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store, run_id = store_copy
    certify_parts: list[Path] = []

    def second_part(path: Path) -> bool:
        certify_parts.extend([path] if path.parent.parent.name == "certify" else [])
        return len(certify_parts) >= 2 and path.parent.parent.name in ("certify", "certifications")

    _full_at(monkeypatch, second_part)
    with pytest.raises(DiskFull, match=r"certification .* keeps 3 of 6 images; free space, then run the same "
                                       r"`crt-bench certify` command"):
        resumable.certify_run(run_id, store, CCFG, device="cpu", progress=False, flush_images=3)
    monkeypatch.undo()
    assert len(store.read("certify")) == 3
    assert store.certification_states(run_id=run_id)["status"].tolist() == ["interrupted"]
    cert_id, rows = resumable.certify_run(run_id, store, CCFG, device="cpu", progress=False, flush_images=3)
    assert rows["idx"].tolist() == list(range(6))
    assert store.certification_states(run_id=run_id)["status"].tolist() == ["finished"]
    folder = store.table_dir("certify") / f"run_id={run_id}"
    assert len(list(folder.glob("*.parquet"))) == 1, "a finished certification's parts are compacted"


def test_compact_command_migrates_a_flat_store(tmp_path: Path) -> None:
    shutil.copytree(FIXED_TABLES, tmp_path / "tables")
    before = {t: ResultsStore(tmp_path).read(t) for t in ("runs", "epochs", "certify", "certifications", "timing")}
    parts = len(list((tmp_path / "tables").rglob("*.parquet")))
    code, out, _ = cli("compact", tmp_path)
    after = len(list((tmp_path / "tables").rglob("*.parquet")))
    assert (code, out.strip()) == (0, f"{parts} parts -> {after} parts") and after < parts
    for table, frame in before.items():
        pd.testing.assert_frame_equal(ResultsStore(tmp_path).read(table)[frame.columns.tolist()], frame)


def test_the_cli_reports_a_full_disk_in_one_line_with_status_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(self):
        raise DiskFull(self.root / "tables" / "runs" / "x.parquet")

    monkeypatch.setattr(ResultsStore, "compact_all", full)
    code, _, err = cli("compact", tmp_path)
    assert code == 1
    assert "error: disk full writing" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
