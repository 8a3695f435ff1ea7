"""Scale and resilience against the real scheduler (the one-node cluster of tests/slurm/cluster.sh): a certification
as a SLURM array of shards writing one store at once, eight jobs of different runs writing one store at once, a job
that reaches its time limit, and a certification shard requeued mid-way. Each compares its rows with an
uninterrupted in-process run and counts them raw (before the store's deduplication): no row lost or doubled.

SLURM holds a requeued job for 120 s (``BeginTime``) before it may start again; the slow tests below release it
at once (``scontrol update StartTime=now``, what an operator may do), which changes nothing crt-bench does."""
from __future__ import annotations

import math
import shutil
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from test_certify_shards import CCFG, DETERMINISTIC
from test_cli import assert_user_error, cli, last_line
from test_slurm import _queue

from crt_bench.certify.resumable import certify_run
from crt_bench.config.certify import CertifyConfig
from crt_bench.core.states import JobState
from crt_bench.grid.executors import make_executor
from crt_bench.grid.jobs import GridSpec
from crt_bench.grid.runner import run_grid
from crt_bench.store.parts import partition_dir, parts_in
from crt_bench.store.store import ResultsStore

CERT_ARGS = ["--n0", str(CCFG.n0), "--n", str(CCFG.n), "--alpha", str(CCFG.alpha), "--batch", str(CCFG.batch),
             "--subset", CCFG.subset, "--device", "cpu", "--no-progress"]


def _copy(gaussian_run, folder: Path) -> tuple[ResultsStore, str]:
    shared, run_id = gaussian_run
    shutil.copytree(shared.root, folder)
    return ResultsStore(folder), run_id


def _raw(store: ResultsStore, table: str, run_id: str) -> pd.DataFrame:
    return store.read(table, where={"run_id": run_id}, raw=True)


def _one_part_each(store: ResultsStore, run_id: str, tables: tuple[str, ...]) -> bool:
    """The run's partitions were compacted: one part each, holding every row (counted by the caller)."""
    return all(len(parts_in(partition_dir(store.table_dir(t), t, run_id))) == 1 for t in tables)


class Releaser:
    """Starts every job SLURM holds after a requeue (reason BeginTime) at once, while running."""

    def __init__(self) -> None:
        self.released: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "Releaser":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(0.5):
            held = subprocess.run(["squeue", "-h", "-r", "-t", "PENDING", "-o", "%i %r"], capture_output=True,
                                  text=True).stdout.split("\n")
            for job_id in [line.split()[0] for line in held if line.endswith(" BeginTime")]:
                if subprocess.run(["scontrol", "update", f"jobid={job_id}", "StartTime=now"],
                                  capture_output=True).returncode == 0:
                    self.released.append(job_id)


@pytest.fixture(scope="module")
def unsharded(gaussian_run, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, pd.DataFrame]:
    """The certification of test_certify_shards (CCFG), in this process, unsharded: the reference rows."""
    store, run_id = _copy(gaussian_run, tmp_path_factory.mktemp("one") / "results")
    cert_id, rows = certify_run(run_id, store, CCFG, device="cpu", progress=False)
    return cert_id, rows.sort_values("idx").reset_index(drop=True)


def test_bad_slurm_certify_options_are_one_line_each(tmp_path: Path) -> None:
    run = ["certify", "some-run", "--results", tmp_path]
    code, _, err = cli(*run, "--shards", "2", "--shard", "0", "--executor", "slurm")
    assert_user_error(code, err, "--shard", "drop --shard")
    code, _, err = cli(*run, "--shards", "2", "--partition", "debug")
    assert_user_error(code, err, "--partition", "--executor slurm")
    code, _, err = cli(*run, "--shards", "2", "--time-min", "5")
    assert_user_error(code, err, "--time-min", "--executor slurm")
    code, _, err = cli(*run, "--executor", "slurm", "--transfer-from", "other@N10-ab")
    assert_user_error(code, err, "--transfer-from", "--executor slurm")
    code, _, err = cli(*run, "--shards", "2", "--executor", "inline")
    assert code == 2 and "inline" in err and "Traceback" not in err
    assert not (tmp_path / "submitit").exists()  # nothing submitted


@pytest.mark.slurm
def test_certification_as_a_slurm_array_equals_the_unsharded_one(slurm_cluster, gaussian_run, unsharded, tmp_path):
    cert_id, reference = unsharded
    store, run_id = _copy(gaussian_run, tmp_path / "results")
    code, out, err = cli("certify", run_id, *CERT_ARGS, "--shards", "3", "--executor", "slurm", "--partition",
                         "shared", "--time-min", "10", "--flush-every", "2", "--results", store.root)
    assert code == 0, err
    assert last_line(out) == cert_id
    raw = _raw(store, "certify", run_id)
    assert sorted(raw["idx"]) == list(range(9))  # every image once: none lost, none doubled
    got = store.certification_rows(cert_id).sort_values("idx").reset_index(drop=True)
    pd.testing.assert_frame_equal(got[DETERMINISTIC], reference[DETERMINISTIC])
    states = store.read("certifications", where={"run_id": run_id})
    assert set(states["shard"]) == {"0/3", "1/3", "2/3", ""}
    assert states[states["shard"] == ""]["status"].iloc[-1] == "finished"
    assert _one_part_each(store, run_id, ("certify",))  # the closing pass compacted every shard's parts
    logs = sorted(p.name for p in (store.root / "submitit").glob("*_log.err"))
    array = {name.split("_")[0] for name in logs}
    assert len(logs) == 3 and len(array) == 1, logs  # one array job, a task per shard


@pytest.mark.slurm
def test_a_slurm_certify_where_no_controller_answers_is_one_line(slurm_cluster, gaussian_run, tmp_path, monkeypatch):
    conf = tmp_path / "slurm.conf"  # the same cluster, at a port nobody listens on
    conf.write_text((slurm_cluster / "slurm.conf").read_text() + "SlurmctldPort=6999\nMessageTimeout=2\n")
    monkeypatch.setenv("SLURM_CONF", str(conf))
    store, run_id = _copy(gaussian_run, tmp_path / "results")
    before = store.read("certify")
    code, _, err = cli("certify", run_id, *CERT_ARGS, "--shards", "2", "--executor", "slurm", "--results", store.root)
    assert_user_error(code, err, "SLURM refused the job", "Unable to contact slurm controller", only_line=False)
    pd.testing.assert_frame_equal(store.read("certify"), before)  # nothing certified


@pytest.mark.slurm
@pytest.mark.slow  # 66 s on the 2-core machine beside a training run: eight processes import torch, then the twin
def test_eight_jobs_of_different_runs_write_one_store_at_once(slurm_cluster, tmp_path):
    spec = GridSpec(methods=["gaussian"], archs=["tiny_cnn"], seeds=list(range(8)), profile="smoke", epochs=1,
                    train_limit=64, device="cpu")
    jobs = [replace(job, certify_subset="range:0:4") for job in spec.jobs()]
    assert len(jobs) == 8
    running_at_once: list[int] = []
    done = threading.Event()

    def count_running() -> None:
        while not done.wait(0.3):
            running_at_once.append(sum(line.endswith(" RUNNING") for line in _queue()))

    counter = threading.Thread(target=count_running, daemon=True)
    counter.start()
    try:
        status = run_grid(jobs, tmp_path / "slurm", make_executor(
            "slurm", tmp_path / "slurm" / "submitit", partition="shared", device="cpu", time_min=10),
            max_parallel=len(jobs), poll_s=0.5)
    finally:
        done.set()
        counter.join()
    assert list(status["state"]) == [JobState.FINISHED] * 8, status.to_dict("records")
    assert max(running_at_once) == 8  # the eight wrote at once
    inline = run_grid(jobs, tmp_path / "inline", make_executor("inline", tmp_path))
    assert list(inline["state"]) == [JobState.FINISHED] * 8
    store, ref = ResultsStore(tmp_path / "slurm"), ResultsStore(tmp_path / "inline")
    runs, ref_runs = store.finished_runs(), ref.finished_runs()
    assert sorted(runs) == sorted(job.key for job in jobs) == sorted(ref_runs)
    outcome = ["idx", "label", "predict", "radius", "correct"]
    for key, run_id in runs.items():
        assert list(_raw(store, "epochs", run_id)["epoch"]) == [1]  # no part lost, no row doubled
        raw = _raw(store, "certify", run_id)
        assert sorted(raw["idx"]) == [0, 1, 2, 3]
        assert _one_part_each(store, run_id, ("certify", "certifications"))
        theirs = ref.read("certify", where={"run_id": ref_runs[key]})
        assert (raw.sort_values("idx")[outcome].reset_index(drop=True)
                .equals(theirs.sort_values("idx")[outcome].reset_index(drop=True))), key
    assert set(store.runs()["status"]) == {"finished"} and len(store.runs()) == 8


@pytest.mark.slurm
@pytest.mark.slow  # minutes: a training of about two 1-minute allocations, then its inline twin
@pytest.mark.timeout(900)
def test_a_job_reaching_its_time_limit_requeues_itself_and_completes(slurm_cluster, tmp_path):
    # The USR2 comes 24-54 s into each 1-minute allocation. submitit installs its handler only after unpickling
    # the task (importing torch): on a starved CPU (this machine beside a nice -20 run: 29 s to get there) the
    # signal came first and SLURM's default action ended the job (exit 140, no requeue). Idle, startup is seconds.
    # The training must outlast an allocation on any machine: 150 epochs took ~2 allocations here but 40 s on CI's
    # faster machine (no USR2 came). So the epochs are sized from a short inline run's measured epoch time (training
    # seconds only, which undercounts the epoch: the run comes out longer, the safe side) to ~90 s of training.
    spec = dict(methods=["gaussian"], archs=["tiny_cnn"], profile="smoke", epochs=10, train_limit=1024, device="cpu")
    assert list(run_grid(GridSpec(**spec).jobs(), tmp_path / "calibrate", make_executor("inline", tmp_path))["state"]) \
        == [JobState.FINISHED]
    per_epoch = float(ResultsStore(tmp_path / "calibrate").read("epochs")["seconds"].median())
    spec["epochs"] = n_epochs = min(2000, max(150, math.ceil(90 / per_epoch)))
    with Releaser() as releaser:
        status = run_grid(GridSpec(**spec).jobs(), tmp_path / "slurm", make_executor(
            "slurm", tmp_path / "slurm" / "submitit", partition="debug", device="cpu", time_min=1), poll_s=0.5)
    assert list(status["state"]) == [JobState.FINISHED], status.to_dict("records")
    store = ResultsStore(tmp_path / "slurm")
    (run_id,) = store.finished_runs().values()
    events = _raw(store, "runs", run_id)
    assert "interrupted" in set(events["status"])  # it reached its time limit (the USR2 shortly before it) ...
    assert releaser.released  # ... and was requeued (SLURM held it, as after any requeue), not restarted anew
    assert len(store.runs()) == 1  # one run, continued over the allocations
    inline = run_grid(GridSpec(**spec).jobs(), tmp_path / "inline", make_executor("inline", tmp_path))
    assert list(inline["state"]) == [JobState.FINISHED]
    epochs = _raw(store, "epochs", run_id)
    assert sorted(epochs["epoch"]) == list(range(1, n_epochs + 1))  # no epoch lost or doubled over the allocations
    ref = ResultsStore(tmp_path / "inline").read("epochs")
    assert list(epochs.sort_values("epoch")["loss"]) == pytest.approx(list(ref.sort_values("epoch")["loss"]), rel=1e-6)
    outcome = ["idx", "label", "predict", "radius", "correct"]
    got, theirs = store.read("certify"), ResultsStore(tmp_path / "inline").read("certify")
    assert got.sort_values("idx")[outcome].reset_index(drop=True).equals(
        theirs.sort_values("idx")[outcome].reset_index(drop=True))


@pytest.mark.slurm
@pytest.mark.slow  # minutes: two shards of a 16-image certification, one requeued, then its reference
@pytest.mark.timeout(900)
def test_scontrol_requeue_of_a_certification_shard_resumes_from_its_rows(slurm_cluster, gaussian_run, tmp_path):
    # Seconds an image: a requeued job keeps running for KillWait (10 s: submitit ignores the SIGTERM), so the
    # shard must outlast that to be cut short.
    ccfg = CertifyConfig(n0=10, n=30_000, alpha=0.01, batch=500, subset="range:0:16")
    args = ["--n0", "10", "--n", str(ccfg.n), "--alpha", "0.01", "--batch", "500", "--subset", ccfg.subset,
            "--device", "cpu", "--no-progress"]
    store, run_id = _copy(gaussian_run, tmp_path / "results")
    requeued: list[str] = []

    def requeue_shard_0_midway() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not requeued:
            running = [line.split()[0] for line in _queue() if line.endswith(" RUNNING")]
            task = [job for job in running if job.endswith("_0")]
            rows = store.read("certify", where={"run_id": run_id}, raw=True) if task else pd.DataFrame()
            done = rows[rows["idx"] % 2 == 0] if "idx" in rows else rows  # no rows yet: no columns either
            if task and 1 <= len(done) <= 3:  # shard 0/2 has images 0, 2, ..., 14
                subprocess.run(["scontrol", "requeue", task[0]], check=True)
                requeued.append(task[0])
            time.sleep(0.2)

    requeuer = threading.Thread(target=requeue_shard_0_midway, daemon=True)
    with Releaser():
        requeuer.start()
        code, out, err = cli("certify", run_id, *args, "--shards", "2", "--executor", "slurm", "--partition", "debug",
                             "--time-min", "10", "--flush-every", "1", "--results", store.root)
        requeuer.join()
    assert requeued and code == 0, err
    cert_id = last_line(out)
    raw = _raw(store, "certify", run_id)
    assert sorted(raw["idx"]) == list(range(16))  # every image once: the requeue lost and doubled none
    states = store.read("certifications", where={"run_id": run_id})
    starts = states[(states["shard"] == "0/2") & (states["status"] == "running")]
    assert len(starts) == 2 and 1 <= starts["images_done"].iloc[-1] < 8  # resumed from its rows, not from the start
    ref_store, _ = _copy(gaussian_run, tmp_path / "reference")
    ref_id, reference = certify_run(run_id, ref_store, ccfg, device="cpu", progress=False)
    assert ref_id == cert_id
    got = store.certification_rows(cert_id).sort_values("idx").reset_index(drop=True)
    pd.testing.assert_frame_equal(got[DETERMINISTIC], reference.sort_values("idx").reset_index(drop=True)[DETERMINISTIC])
