"""Grids against a real scheduler: the one-node SLURM cluster of tests/slurm/cluster.sh (CPU partition ``debug``,
no GPUs, no accounting), started once per session where it can be (root, Debian's slurm and munge packages) and
stopped after. Elsewhere these tests skip with the script's reason; with ``CRT_BENCH_REQUIRE_SLURM=1`` (set by
``.ci/run`` where it installed the packages) a cluster that does not start fails them, so CI cannot pass by
skipping them."""
from __future__ import annotations

import io
import subprocess
import threading
import time
from pathlib import Path

import pytest
from test_cli import assert_user_error, cli

from crt_bench.core.states import JobState
from crt_bench.grid.executors import make_executor
from crt_bench.grid.jobs import GridSpec
from crt_bench.grid.runner import run_grid
from crt_bench.store.store import ResultsStore

TINY = ["--method", "gaussian", "--arch", "tiny_cnn", "--profile", "smoke", "--epochs", "1", "--train-limit", "128",
        "--device", "cpu"]
pytestmark = pytest.mark.slurm  # the cluster: the session fixture slurm_cluster (tests/slurm_cluster.py, via conftest)


def _queue() -> list[str]:
    return subprocess.run(["squeue", "-h", "-t", "all", "-o", "%i %T"], capture_output=True, text=True,
                          check=True).stdout.split("\n")


def _certified(results: Path) -> list[tuple]:
    """Every certified image's outcome, without ids and times: equal for the same job run anywhere."""
    df = ResultsStore(results).read("certify")
    cols = [c for c in ("idx", "label", "predict", "radius", "correct") if c in df.columns]
    return sorted(map(tuple, df[cols].itertuples(index=False)))


def test_sweep_on_slurm_gives_the_rows_of_an_inline_run(slurm_cluster, tmp_path):
    code, _, err = cli("sweep", *TINY, "--executor", "slurm", "--partition", "debug", "--time-min", "10",
                       "--results", tmp_path / "slurm")
    assert code == 0, err
    code, _, err = cli("sweep", *TINY, "--executor", "inline", "--results", tmp_path / "inline")
    assert code == 0, err
    on_slurm = _certified(tmp_path / "slurm")
    assert on_slurm and on_slurm == _certified(tmp_path / "inline")
    assert list(ResultsStore(tmp_path / "slurm").runs()["status"]) == ["finished"]


def test_a_refused_submission_is_one_line_with_sbatch_s_reason(slurm_cluster, tmp_path):
    before = _queue()
    code, _, err = cli("sweep", *TINY, "--executor", "slurm", "--gpus", "1", "--results", tmp_path)
    assert_user_error(code, err, "SLURM refused the job", "Invalid generic resource", only_line=False)
    assert _queue() == before  # nothing submitted


def test_scancel_of_a_teacher_blocks_its_student_with_the_reason(slurm_cluster, tmp_path):
    jobs = GridSpec(methods=["gaussian", "crt"], archs=["tiny_cnn"], teacher_method="gaussian",
                    teacher_archs=["tiny_cnn"], profile="smoke", epochs=40, train_limit=256, device="cpu").jobs()
    cancelled: list[str] = []

    def cancel_the_first_running_job() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not cancelled:
            running = [line.split()[0] for line in _queue() if line.endswith(" RUNNING")]
            if running:
                subprocess.run(["scancel", running[0]], check=True)
                cancelled.append(running[0])
            time.sleep(0.5)

    killer = threading.Thread(target=cancel_the_first_running_job, daemon=True)
    killer.start()
    status = run_grid(jobs, tmp_path, make_executor("slurm", tmp_path / "submitit", partition="debug", device="cpu",
                                                    time_min=10), poll_s=0.5)
    killer.join()
    assert cancelled
    teacher, student = status.to_dict("records")
    assert teacher["state"] == JobState.FAILED and f"SLURM job {cancelled[0]}" in teacher["error"]
    assert "CANCELLED" in teacher["error"]
    assert student["state"] == JobState.BLOCKED and teacher["key"] in student["error"]


def test_slurm_where_no_controller_answers_is_one_line(slurm_cluster, tmp_path, monkeypatch):
    conf = tmp_path / "slurm.conf"  # the same cluster, at a port nobody listens on
    conf.write_text((slurm_cluster / "slurm.conf").read_text() + "SlurmctldPort=6999\nMessageTimeout=2\n")  # 1 s, not 9
    monkeypatch.setenv("SLURM_CONF", str(conf))
    anywhere = [arg for arg in TINY if arg not in ("--device", "cpu")]  # GPUs or not: asks sinfo about the partition
    code, _, err = cli("sweep", *anywhere, "--executor", "slurm", "--results", tmp_path / "r")
    assert_user_error(code, err, "no SLURM scheduler answers", "sinfo", only_line=False)
    code, _, err = cli("sweep", *TINY, "--executor", "slurm", "--results", tmp_path / "r")  # no GPUs: sbatch asked
    assert_user_error(code, err, "SLURM refused the job", "Unable to contact slurm controller", only_line=False)
    code, _, err = cli("sweep", *TINY, "--executor", "slurm", "--detach", "--results", tmp_path / "d")
    assert_user_error(code, err, "SLURM refused the job", "Unable to contact slurm controller", only_line=False)
    assert [r["slurm_job_id"] for r in _recorded(tmp_path / "d")] == [""]  # nothing submitted, and none recorded
    code, out, err = cli("status", tmp_path / "d")  # a record without SLURM job ids: no need to ask the scheduler
    assert code == 0 and "not submitted: SLURM refused the job" in " ".join(out.split()), err
    from crt_bench.store.grid_status import save_grid_status

    save_grid_status(tmp_path / "d", [{"key": "k", "state": "submitted", "slurm_job_id": "7", "run_key": "k"}])
    code, _, err = cli("status", tmp_path / "d")
    assert_user_error(code, err, "no SLURM scheduler answers", "squeue", only_line=False)


@pytest.mark.slow  # 40-180 s on the shared 2-core machine (a 6-epoch job, requeued, then its inline twin)
def test_scontrol_requeue_mid_training_resumes_with_every_row_once(slurm_cluster, tmp_path):
    from crt_bench.models.files import CHECKPOINT_FILE

    spec = dict(methods=["gaussian"], archs=["tiny_cnn"], profile="smoke", epochs=6, train_limit=128, device="cpu")
    requeued: list[str] = []

    def requeue_after_the_first_checkpoint() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not requeued:
            running = [line.split()[0] for line in _queue() if line.endswith(" RUNNING")]
            if running and any((tmp_path / "slurm").glob(f"runs/*/{CHECKPOINT_FILE}")):
                subprocess.run(["scontrol", "requeue", running[0]], check=True)
                requeued.append(running[0])
            time.sleep(0.2)

    requeuer = threading.Thread(target=requeue_after_the_first_checkpoint, daemon=True)
    requeuer.start()
    status = run_grid(GridSpec(**spec).jobs(), tmp_path / "slurm", make_executor(
        "slurm", tmp_path / "slurm" / "submitit", partition="debug", device="cpu", time_min=10), poll_s=0.5)
    requeuer.join()
    assert requeued and list(status["state"]) == [JobState.FINISHED], status.to_dict("records")
    inline = run_grid(GridSpec(**spec).jobs(), tmp_path / "inline", make_executor("inline", tmp_path))
    assert list(inline["state"]) == [JobState.FINISHED]
    epochs = ResultsStore(tmp_path / "slurm").read("epochs")
    assert sorted(epochs["epoch"]) == list(range(1, 7))  # no epoch lost or doubled by the requeue
    ref = ResultsStore(tmp_path / "inline").read("epochs")
    loss = [c for c in ("train_loss", "loss") if c in epochs.columns][0]
    assert list(epochs.sort_values("epoch")[loss]) == pytest.approx(list(ref.sort_values("epoch")[loss]), rel=1e-6)
    assert _certified(tmp_path / "slurm") == _certified(tmp_path / "inline")


@pytest.mark.slow  # 12 minutes on 2 cores: the smoke plan's jobs, its timing probes and the report, twice
@pytest.mark.timeout(1500)
def test_reproduce_smoke_on_slurm_gives_the_rows_of_an_inline_reproduce(slurm_cluster, tmp_path):
    common = ["reproduce", "--profile", "smoke", "--device", "cpu", "--no-install-data"]
    code, _, err = cli(*common, "--executor", "slurm", "--partition", "debug", "--time-min", "30",
                       "--results", tmp_path / "slurm", "--out", tmp_path / "slurm-plots")
    assert code == 0, err
    code, _, err = cli(*common, "--executor", "inline", "--results", tmp_path / "inline",
                       "--out", tmp_path / "inline-plots")
    assert code == 0, err
    assert (tmp_path / "slurm-plots" / "REPORT.md").is_file()
    slurm_runs = ResultsStore(tmp_path / "slurm").runs()
    assert set(slurm_runs["status"]) == {"finished"}
    assert sorted(slurm_runs["job_key"]) == sorted(ResultsStore(tmp_path / "inline").runs()["job_key"])
    assert _certified(tmp_path / "slurm") == _certified(tmp_path / "inline")


def test_a_stopped_grid_cancels_its_slurm_jobs_without_waiting_out_the_grace(slurm_cluster, tmp_path):
    from crt_bench.grid.watch import JobWatch
    from rich.console import Console

    ex = make_executor("slurm", tmp_path / "submitit", partition="debug", device="cpu", time_min=10)
    handle = ex.submit(time.sleep, 300)
    watch = JobWatch(Console(file=io.StringIO()))
    watch.add("sleeper", handle, label="sleeper")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and f"{handle.job_id} RUNNING" not in _queue():
        time.sleep(0.5)
    started = time.monotonic()
    assert watch.stop_all(grace_s=100) == ["sleeper"]
    assert time.monotonic() - started < 60  # KillWait is 10 s; the grace alone would be 100
    assert f"{handle.job_id} CANCELLED" in _queue()


# -- detached grids (--detach): the order carried by SLURM dependencies, followed by `crt-bench status` -------------
PAIR = ["--method", "gaussian", "--method", "crt", "--arch", "tiny_cnn", "--teacher-method", "gaussian",
        "--teacher-arch", "tiny_cnn", "--profile", "smoke", "--train-limit", "128", "--device", "cpu"]
ON_SLURM = ["--executor", "slurm", "--partition", "debug", "--time-min", "10"]


def _ids() -> set[str]:
    """The job ids the scheduler knows now (it forgets an ended job MinJobAge, 600 s, after it ended: a set of
    them can only shrink unless something was submitted)."""
    return {line.split()[0] for line in _queue() if line.strip()}


def _squeue(job_id: str, fmt: str) -> str:
    return subprocess.run(["squeue", "-h", "-t", "all", "-j", job_id, "-o", fmt], capture_output=True, text=True,
                          check=True).stdout.strip()


def _wait_for(what, timeout_s: float, every_s: float = 0.5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = what()
        if got:
            return got
        time.sleep(every_s)
    return what()


def _ended(ids: list[str]) -> bool:
    from crt_bench.grid.slurm import LIVE_STATES

    return all(_squeue(i, "%T") not in LIVE_STATES for i in ids)


def _recorded(results: Path) -> list[dict]:
    from crt_bench.store.grid_status import grid_rows

    return grid_rows(results)


def _status(results: Path) -> dict[str, dict]:
    import json

    code, out, err = cli("status", "--json", results)
    assert code == 0, err
    return {row["key"]: row for row in json.loads(out)}


def test_a_detached_sweep_returns_at_once_and_a_rerun_attaches_to_its_jobs(slurm_cluster, tmp_path):
    args = ["sweep", *PAIR, "--epochs", "40", *ON_SLURM, "--results", tmp_path, "--detach"]
    code, out, err = cli(*args)
    assert code == 0, err
    teacher, student = _recorded(tmp_path)
    t, s = teacher["slurm_job_id"], student["slurm_job_id"]
    try:
        assert _squeue(s, "%T") == "PENDING"  # the parent returned without waiting for the grid
        assert f"{student['key']}: submitted: SLURM job {s}" in out and f"crt-bench status {tmp_path}" in out
        assert _squeue(s, "%E") == f"afterok:{t}(unfulfilled)"  # the order is the scheduler's, not the parent's
        code, out, err = cli("status", tmp_path)
        assert code == 0, err
        assert f"{student['key']}: pending: waits for its teacher {teacher['key']} (slurm {s})" in out
        assert f"{teacher['key']}: running (slurm {t})" in out or f"{teacher['key']}: pending" in out
        queued = _ids()
        code, out, err = cli(*args)
        assert code == 0, err
        assert f"{student['key']}: attached to the live SLURM job {s}" in out
        assert _ids() <= queued  # nothing submitted again
        assert [r["slurm_job_id"] for r in _recorded(tmp_path)] == [t, s]
    finally:
        subprocess.run(["scancel", t, s], check=False)


def test_scancel_of_a_teacher_in_a_detached_grid_blocks_its_students_and_nothing_else(slurm_cluster, tmp_path):
    code, _, err = cli("sweep", *PAIR, "--sigma", "0.25", "--sigma", "0.5", "--epochs", "40", *ON_SLURM,
                       "--results", tmp_path, "--detach")
    assert code == 0, err
    rows = {r["key"]: r for r in _recorded(tmp_path)}
    teacher, other_teacher, student, other_student = rows
    ids = {key: rows[key]["slurm_job_id"] for key in rows}
    try:
        assert _wait_for(lambda: _squeue(ids[teacher], "%T") == "RUNNING", 60)
        subprocess.run(["scancel", ids[teacher]], check=True)
        assert _wait_for(lambda: _squeue(ids[student], "%r") == "DependencyNeverSatisfied", 30)
        view = _status(tmp_path)
        assert view[teacher]["state"] == "cancelled"
        assert view[student]["state"] == "blocked"
        assert view[student]["why"] == f"its teacher {teacher} was cancelled"
        assert view[other_teacher]["state"] in ("running", "pending", "finished")
        assert view[other_student]["state"] in ("running", "pending", "finished")
        code, out, err = cli("status", tmp_path)
        assert code == 0, err
        assert f"{student}: blocked: its teacher {teacher} was cancelled (slurm {ids[student]})" in out
        # nothing else was cancelled: the student waits (blocked), the other pair goes on
        assert [_squeue(ids[k], "%T") == "CANCELLED" for k in rows] == [True, False, False, False]
    finally:
        subprocess.run(["scancel", *ids.values()], check=False)


@pytest.mark.slow  # 40-90 s: two training jobs on the cluster, then the same grid inline
def test_a_detached_sweep_gives_the_rows_of_an_inline_run_and_a_waiting_rerun_submits_nothing(slurm_cluster,
                                                                                              tmp_path):
    args = ["sweep", *PAIR, "--epochs", "1", *ON_SLURM, "--results", tmp_path / "slurm"]
    code, _, err = cli(*args, "--detach")
    assert code == 0, err
    ids = [r["slurm_job_id"] for r in _recorded(tmp_path / "slurm")]
    queued = _ids()
    code, _, err = cli(*args)  # no --detach: attaches to the live jobs and waits for them
    assert code == 0, err
    assert _ids() <= queued  # it waited for the detached jobs and submitted none of its own
    assert _wait_for(lambda: _ended(ids), 30)  # their results are in: the scheduler ends them a moment later
    view = _status(tmp_path / "slurm")
    assert [v["state"] for v in view.values()] == ["finished", "finished"]
    assert [v["slurm_job_id"] for v in view.values()] == ids and all(v["run_id"] for v in view.values())
    code, _, err = cli("sweep", *PAIR, "--epochs", "1", "--executor", "inline", "--results", tmp_path / "inline")
    assert code == 0, err
    assert _certified(tmp_path / "slurm") == _certified(tmp_path / "inline") != []


@pytest.mark.slow  # 2-4 minutes: a tiny reproduce plan detached on the cluster (grid, timing, report), then inline
def test_a_detached_reproduce_runs_its_timing_and_report_as_jobs_with_the_rows_of_an_inline_run(
        slurm_cluster, tmp_path, monkeypatch):
    from crt_bench.grid import reproduce

    real = reproduce.plan_for
    monkeypatch.setattr(reproduce, "plan_for", lambda profile, data_dir=None: real(profile, data_dir).on_arch(
        "tiny_cnn", train_limit=128))
    common = ["reproduce", "--profile", "smoke", "--device", "cpu", "--no-install-data"]
    code, out, err = cli(*common, "--executor", "slurm", "--partition", "debug", "--time-min", "20", "--detach",
                         "--results", tmp_path / "slurm", "--out", tmp_path / "slurm-plots")
    assert code == 0, err
    rows = _recorded(tmp_path / "slurm")
    grid = [r["slurm_job_id"] for r in rows if not r.get("step")]
    timing, report = [r["slurm_job_id"] for r in rows if r.get("step")]
    assert f"[report job]: submitted: SLURM job {report}" in out
    assert _squeue(timing, "%E").startswith("afterany:")  # after the grid, failed jobs or not
    assert _squeue(report, "%E").endswith(f"afterany:{timing}(unfulfilled)")
    assert not (tmp_path / "slurm-plots" / "REPORT.md").exists()  # the report is the last job's, not the parent's
    assert _wait_for(lambda: _ended([*grid, timing, report]), 400, every_s=2)
    view = _status(tmp_path / "slurm")
    assert {v["state"] for v in view.values()} == {"finished"}, view
    assert (tmp_path / "slurm-plots" / "REPORT.md").is_file()
    code, _, err = cli(*common, "--executor", "inline", "--results", tmp_path / "inline",
                       "--out", tmp_path / "inline-plots")
    assert code == 0, err
    on_slurm, inline = ResultsStore(tmp_path / "slurm").runs(), ResultsStore(tmp_path / "inline").runs()
    assert sorted(on_slurm["job_key"]) == sorted(inline["job_key"]) and set(on_slurm["status"]) == {"finished"}
    assert _certified(tmp_path / "slurm") == _certified(tmp_path / "inline")


def test_a_rerun_waiting_for_a_detached_grid_ends_when_the_scheduler_blocks_a_job(slurm_cluster, tmp_path):
    from crt_bench.grid.detach import attach

    code, _, err = cli("sweep", *PAIR, "--epochs", "40", *ON_SLURM, "--results", tmp_path, "--detach")
    assert code == 0, err
    t, s = [r["slurm_job_id"] for r in _recorded(tmp_path)]
    jobs = GridSpec(methods=["gaussian", "crt"], archs=["tiny_cnn"], teacher_method="gaussian",
                    teacher_archs=["tiny_cnn"], profile="smoke", epochs=40, train_limit=128, device="cpu").jobs()
    queued = _ids()
    attached = attach(jobs, tmp_path, tmp_path / "submitit")
    assert {k: h.job_id for k, h in attached.items()} == {jobs[0].key: t, jobs[1].key: s}

    def cancel_the_teacher() -> None:
        if _wait_for(lambda: _squeue(t, "%T") == "RUNNING", 60):
            subprocess.run(["scancel", t], check=True)

    killer = threading.Thread(target=cancel_the_teacher, daemon=True)
    killer.start()
    try:
        status = run_grid(jobs, tmp_path, make_executor("slurm", tmp_path / "submitit", partition="debug",
                                                        device="cpu", time_min=10), poll_s=0.5, attached=attached)
    finally:
        killer.join()
        subprocess.run(["scancel", t, s], check=False)
    teacher, student = status.to_dict("records")
    assert teacher["state"] == JobState.FAILED and "CANCELLED" in teacher["error"]
    # SLURM would have kept the student pending forever: the waiting parent ends it and says why
    assert student["state"] == JobState.FAILED and "DependencyNeverSatisfied" in student["error"]
    assert _squeue(s, "%T") == "CANCELLED" and _ids() <= queued  # nothing submitted again
