"""Grid runner: submitit's local executor for real, SLURM through submitit's own sbatch rendering."""
from pathlib import Path

import pytest

from crt_bench.cli.app import main
from crt_bench.core.errors import CrtBenchError
from crt_bench.grid.executors import make_executor, sbatch_preview, slurm_parameters
from crt_bench.grid.jobs import GridSpec, Job
from crt_bench.grid.runner import run_grid
from crt_bench.store.store import ResultsStore

TINY = dict(archs=["tiny_cnn"], teacher_method="gaussian", teacher_archs=["tiny_cnn"], epochs=1, train_limit=128)


def test_grid_expansion_puts_teachers_first_and_links_students():
    spec = GridSpec(methods=["gaussian", "crt"], sigmas=[0.25, 0.5], **TINY)
    jobs = spec.jobs()
    keys = [j.key for j in jobs]
    assert len(keys) == len(set(keys)) == 4  # the gaussian tiny_cnn job is also the teacher: counted once
    for job in jobs:
        if job.method == "crt":
            assert job.teacher is not None and job.teacher.sigma == job.sigma
            assert keys.index(job.teacher.key) < keys.index(job.key)


def test_two_job_grid_through_submitit_local_executor(tmp_path):
    jobs = GridSpec(methods=["gaussian", "crt"], **TINY).jobs()
    status = run_grid(jobs, tmp_path, make_executor("local", tmp_path / "submitit"), poll_s=0.2)
    assert list(status["state"]) == ["finished", "finished"]
    store = ResultsStore(tmp_path)
    runs = store.runs().set_index("run_id")
    teacher_id, student_id = status["run_id"]
    assert runs.loc[student_id, "teacher_run_id"] == teacher_id
    assert set(store.read("certify")["run_id"]) == {teacher_id, student_id}
    again = run_grid(jobs, tmp_path, make_executor("local", tmp_path / "submitit"), poll_s=0.2)
    assert list(again["state"]) == ["skipped (finished)"] * 2
    assert len(store.runs()) == 2  # nothing retrained


def test_failed_job_is_reported_with_its_log_and_blocks_its_students(tmp_path):
    bad = Job("gaussian", "tiny_cnn", profile="smoke", dataset="cifar10", data_dir=str(tmp_path / "empty"),
              epochs=1, train_limit=64)
    student = Job("crt", "tiny_cnn", profile="smoke", teacher=bad, epochs=1, train_limit=64)
    status = run_grid([bad, student], tmp_path, make_executor("local", tmp_path / "submitit"), poll_s=0.2)
    assert list(status["state"]) == ["failed", "blocked (teacher failed)"]
    assert "--data-dir" in status["error"][0]
    log = Path(status["log"][0])
    assert log.is_file() and "data-dir" in log.read_text()


SLURM = dict(partition="gpu-a100", gpus=2, time_min=720, cpus_per_task=8, array_parallelism=4)
FLAGS = ("--partition=gpu-a100", "--gpus-per-node=2", "--time=720", "--cpus-per-task=8", "--job-name=crt-bench")


def test_slurm_parameters_in_the_sbatch_script(tmp_path):
    script = sbatch_preview(tmp_path, **slurm_parameters(**SLURM))
    assert all(flag in script for flag in FLAGS)


def test_slurm_executor_gets_the_parameters(tmp_path, monkeypatch):
    # Pretend srun exists so that submitit builds its real SlurmExecutor; then render its submission file.
    import submitit.slurm.slurm as slurm_module

    real_which = slurm_module.shutil.which
    monkeypatch.setattr(slurm_module.shutil, "which", lambda name: "/usr/bin/srun" if name == "srun" else real_which(name))
    ex = make_executor("slurm", tmp_path, **SLURM)
    assert ex.parameters["array_parallelism"] == 4
    script = ex._make_submission_file_text("python -m submitit.core._submit x", "uid")
    assert all(flag in script for flag in FLAGS)


def test_slurm_without_srun_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "no-slurm-here"))  # no srun, whatever this machine has installed
    with pytest.raises(CrtBenchError, match="--dry-run"):
        make_executor("slurm", tmp_path, **SLURM)


def test_sweep_dry_run_prints_jobs_and_sbatch(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["sweep", "--method", "gaussian", "--method", "crt", "--arch", "tiny_cnn", "--teacher-arch", "resnet20",
              "--executor", "slurm", "--partition", "p1", "--dry-run", "--results", str(tmp_path)])
    assert info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "crt/tiny_cnn" in out and "smoothmix/resnet20" in out and "--partition=p1" in out


def test_unknown_executor_and_method_are_clear_errors(tmp_path):
    with pytest.raises(CrtBenchError, match="unknown executor"):
        make_executor("kubernetes", tmp_path)
    with pytest.raises(CrtBenchError, match="unknown method"):
        GridSpec(methods=["smoothadvv"], archs=["tiny_cnn"]).jobs()


def test_local_jobs_show_their_progress_and_whole_names_on_the_console(tmp_path, capsys):
    """A newcomer sees each job's epochs as they happen, under the job's name; keys are never eaten as markup."""
    jobs = GridSpec(methods=["gaussian", "crt"], **{**TINY, "epochs": 2}).jobs()
    status = run_grid(jobs, tmp_path, make_executor("local", tmp_path / "submitit"), poll_s=0.2)
    assert list(status["state"]) == ["finished", "finished"]
    err = capsys.readouterr().err
    student = jobs[1]
    assert f"submitted {student.key}" in err.replace("\n", "")  # "<-[gaussian/...]" printed, not parsed
    for job in jobs:
        for epoch in (1, 2):
            assert any(line.startswith(f"[{job.label}]") and f"epoch   {epoch}/2" in line
                       for line in err.splitlines()), f"no epoch {epoch} line of {job.label}"
        assert any(line.startswith(f"[{job.label}]") and "certified 20/20 images" in line
                   for line in err.splitlines()), f"no certification line of {job.label}"


def test_a_failed_jobs_error_reaches_the_console_whole(tmp_path, capsys):
    bad = Job("gaussian", "tiny_cnn", profile="smoke", dataset="fashion-mnist", data_dir=str(tmp_path / "empty"),
              epochs=1, train_limit=64)
    student = Job("crt", "tiny_cnn", profile="smoke", dataset="fashion-mnist", teacher=bad, epochs=1, train_limit=64)
    status = run_grid([bad, student], tmp_path, make_executor("local", tmp_path / "submitit"), poll_s=0.2)
    error = status["error"][0]
    # data.py's message ends with its last remedy: nothing is cut in the middle.
    assert error.rstrip().endswith("so torchvision can download them.")
    assert "apt-get install dataset-fashion-mnist" in error
    assert status["state"][1] == "blocked (teacher failed)" and bad.key in status["error"][1]
    assert not (tmp_path / "tables" / "runs").exists() or ResultsStore(tmp_path).runs()["method"].eq("gaussian").all()
    console = " ".join(capsys.readouterr().err.split())
    assert "so torchvision can download them." in console
    from crt_bench.store.grid_status import read_grid_status

    saved = read_grid_status(tmp_path)
    assert list(saved["state"]) == ["failed", "blocked (teacher failed)"]


GRID_SCRIPT = """
import sys
from crt_bench.grid.executors import make_executor
from crt_bench.grid.jobs import GridSpec
from crt_bench.grid.runner import run_grid
jobs = GridSpec(methods=["gaussian"], archs=["tiny_cnn"], epochs=200, train_limit=256).jobs()
run_grid(jobs, sys.argv[1], make_executor("local", sys.argv[1] + "/submitit"), poll_s=0.2)
"""


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline:
                found.append(int(proc.name))
    return found


def test_sigterm_to_the_grid_stops_its_workers(tmp_path):
    """A grid killed with SIGTERM (kill, SLURM, a scheduler) leaves no worker behind to race its successor."""
    import os
    import signal
    import subprocess
    import sys
    import time

    results = tmp_path / "results"
    parent = subprocess.Popen([sys.executable, "-c", GRID_SCRIPT, str(results)], stderr=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    lines: list[str] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until the worker is training
        line = parent.stderr.readline()
        lines.append(line)
        if "epoch" in line and "/200" in line:
            break
    assert any("/200" in line for line in lines), "".join(lines)
    workers = [pid for pid in _processes_mentioning(str(results / "submitit")) if pid != parent.pid]
    assert workers, "the worker process was not found"
    os.kill(parent.pid, signal.SIGTERM)
    _, rest = parent.communicate(timeout=180)
    assert parent.returncode != 0
    assert "stopped 1 running job" in " ".join(rest.split())
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _processes_mentioning(str(results / "submitit")):
        time.sleep(0.2)
    assert not _processes_mentioning(str(results / "submitit")), "a worker outlived the grid"
    from crt_bench.store.grid_status import read_grid_status

    assert list(read_grid_status(results)["state"]) == ["interrupted"]


def test_a_preempted_or_timed_out_job_requeues_itself_and_resumes(tmp_path):
    """submitit's checkpoint/requeue: USR2 mid-training (what SLURM sends before the time limit) requeues the
    job, which resumes from the run's last checkpoint and ends with the weights of an uninterrupted run."""
    import os
    import time

    import torch
    from submitit.local.local import LocalJobEnvironment

    from crt_bench.grid.execute import execute_job
    from crt_bench.grid.task import GridTask

    job = Job("gaussian", "tiny_cnn", profile="smoke", epochs=6, train_limit=512, certify=False)
    ex = make_executor("local", tmp_path / "submitit", time_min=60)
    handle = ex.submit(GridTask(), job, str(tmp_path))
    store = ResultsStore(tmp_path)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # wait for the first epoch checkpoint, then "preempt"
        epochs = store.read("epochs")
        if not epochs.empty and len(epochs) >= 1:
            break
        time.sleep(0.2)
    assert not handle.done(), "the job finished before it could be preempted; make it longer"
    # The preemption / timeout signal, to the task itself (the local controller only forwards SIGTERM).
    controller = handle._process.pid
    children = Path(f"/proc/{controller}/task/{controller}/children").read_text().split()
    assert len(children) == 1
    os.kill(int(children[0]), LocalJobEnvironment._usr_sig())
    run_id = handle.result()
    log = Path(handle.paths.stdout).read_text() + Path(handle.paths.stderr).read_text()
    assert "Requeued" in log or "requeue" in log.lower(), log[-2000:]
    runs = store.read("runs")  # every state change: one run, interrupted by the signal, then finished
    assert set(runs["run_id"]) == {run_id}
    assert {"interrupted", "finished"} <= set(runs["status"])
    assert store.read("epochs").query("run_id == @run_id")["epoch"].tolist() == [1, 2, 3, 4, 5, 6]
    # The same job run straight through, in another results folder: the same weights.
    other = tmp_path / "straight"
    straight_id = execute_job(job, str(other))
    got = torch.load(store.run_dir(run_id) / "model.pt", weights_only=True)["state_dict"]
    want = torch.load(ResultsStore(other).run_dir(straight_id) / "model.pt", weights_only=True)["state_dict"]
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in got)


def test_a_certification_cut_short_is_completed_when_the_grid_runs_again(tmp_path, monkeypatch):
    """Some rows are not a certification: the grid re-runs the job, which certifies only the missing images."""
    import pytest
    from helpers import Killed, dies_after

    from crt_bench.certify import resumable as certify_run_mod
    from crt_bench.grid import execute as execute_mod
    from crt_bench.grid.execute import execute_job

    job = Job("gaussian", "tiny_cnn", profile="smoke", epochs=1, train_limit=128)
    monkeypatch.setattr(certify_run_mod, "iter_certify", dies_after(certify_run_mod.iter_certify, 5))
    monkeypatch.setattr(execute_mod, "certify_run", _with_flush(certify_run_mod.certify_run, 2))
    with pytest.raises(Killed):
        execute_job(job, str(tmp_path))
    monkeypatch.undo()
    store = ResultsStore(tmp_path)
    partial = store.read("certify")
    assert 0 < len(partial) < 20
    status = run_grid([job], tmp_path, make_executor("debug", tmp_path / "submitit"))
    assert list(status["state"]) == ["finished"]  # not "skipped": its certification had not finished
    rows = store.read("certify", raw=True)
    assert sorted(rows["idx"]) == list(range(20)), "every image once: the first 5 kept, the rest added"
    again = run_grid([job], tmp_path, make_executor("debug", tmp_path / "submitit"))
    assert list(again["state"]) == ["skipped (finished)"]


def _with_flush(fn, every):
    def call(*args, **kwargs):
        return fn(*args, **{**kwargs, "flush_images": every})
    return call


def test_a_grid_job_with_two_tasks_trains_one_data_parallel_run(tmp_path):
    """--nproc 2: submitit's two tasks become two torch.distributed ranks of one run (gloo on a CPU), which
    ends with the weights of the single-process run; rank 0 alone writes rows and certifies."""
    import torch

    from crt_bench.grid.execute import execute_job

    job = Job("gaussian", "tiny_cnn", profile="smoke", epochs=2, train_limit=128)
    status = run_grid([job], tmp_path, make_executor("local", tmp_path / "submitit", nproc=2), poll_s=0.2)
    assert list(status["state"]) == ["finished"], status["error"][0]
    store = ResultsStore(tmp_path)
    runs = store.runs()
    assert len(runs) == 1 and int(runs["world_size"].iloc[0]) == 2
    assert store.read("epochs")["epoch"].tolist() == [1, 2]
    assert sorted(store.read("certify")["idx"]) == list(range(20))
    straight = execute_job(job, str(tmp_path / "one"))
    got = torch.load(store.run_dir(status["run_id"][0]) / "model.pt", weights_only=True)["state_dict"]
    want = torch.load(ResultsStore(tmp_path / "one").run_dir(straight) / "model.pt", weights_only=True)["state_dict"]
    # float32 steps agree to rounding; bf16 autocast (this CPU's default where it computes bf16) rounds each
    # rank's half-batch activations apart from the whole batch's: a bf16-sized tolerance then
    atol = 1e-5 if runs["precision"].iloc[0] == "fp32" else 2e-3
    assert all(torch.allclose(got[k].float(), want[k].float(), atol=atol) for k in want)


def test_nproc_needs_a_real_executor(tmp_path):
    with pytest.raises(CrtBenchError, match="--nproc needs local or slurm"):
        make_executor("debug", tmp_path, nproc=2)


def _fake_slurm(tmp_path: Path, monkeypatch, sinfo: str) -> None:
    """srun and an sinfo that prints ``sinfo`` (partition and GRES lines) on a PATH of their own."""
    bin_dir = tmp_path / "fake-slurm-bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    (bin_dir / "sinfo").write_text(f"#!/bin/sh\nprintf '{sinfo}'\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


@pytest.mark.parametrize("partition, asked, device, profile, nproc, expected", [
    ("gpu", None, "auto", "smoke", 1, 1),
    ("gpu", None, "auto", "smoke", 4, 4),  # --nproc K: K ranks, one GPU each
    ("gpu", None, "cpu", "smoke", 2, None),  # a CPU run asks for none
    ("gpu", None, "auto", "cpu", 1, None),  # a CPU profile asks for none
    ("debug", None, "auto", "smoke", 1, None),  # a partition without GPUs
    (None, None, "auto", "smoke", 1, None),  # the default partition (debug*) has none
    ("debug", 0, "auto", "smoke", 1, None),
    ("gpu", 2, "cpu", "smoke", 1, 2),  # asked for: given
])
def test_slurm_jobs_ask_for_gpus_only_where_they_use_them(tmp_path, monkeypatch, partition, asked, device, profile,
                                                         nproc, expected):
    _fake_slurm(tmp_path, monkeypatch, "debug* (null)\\ngpu gpu:a100:4(S:0-1)\\n")
    ex = make_executor("slurm", tmp_path, partition=partition, gpus=asked, device=device, profile=profile,
                       nproc=nproc)
    assert ex.parameters.get("gpus_per_node") == expected
    script = ex._make_submission_file_text("python -m submitit.core._submit x", "uid")
    assert ("--gpus-per-node" in script) == (expected is not None)


def test_an_unknown_partition_is_one_line_naming_the_cluster_s(tmp_path, monkeypatch):
    _fake_slurm(tmp_path, monkeypatch, "debug* (null)\\n")
    with pytest.raises(CrtBenchError, match=r"no partition 'gpu'; its partitions: debug$"):
        make_executor("slurm", tmp_path, partition="gpu")


def test_memory_and_pass_through_options_reach_the_sbatch_script(tmp_path):
    script = sbatch_preview(tmp_path, **slurm_parameters(gpus=0, mem="16G", slurm_extra={"account": "proj",
                                                                                         "qos": "long"}))
    assert "--mem=16G" in script and "--account=proj" in script and "--qos=long" in script
    assert "gpus" not in script


@pytest.mark.parametrize("command", [["sweep", "--arch", "tiny_cnn"], ["reproduce", "--profile", "smoke"]])
@pytest.mark.parametrize("option", [["--partition", "debug"], ["--gpus", "0"], ["--mem", "4G"],
                                    ["--slurm-opt", "account=a"], ["--cpus-per-task", "2"]])
def test_a_slurm_option_without_the_slurm_executor_is_one_line(tmp_path, command, option):
    from test_cli import assert_user_error, cli

    code, _, err = cli(*command, *option, "--executor", "local", "--results", tmp_path / "r")
    assert_user_error(code, err, option[0], "--executor slurm")
    assert not (tmp_path / "r").exists()


def test_the_readme_s_slurm_dry_run_asks_a_cpu_job_for_no_gpu(tmp_path):
    from test_cli import cli

    code, out, err = cli("sweep", "--method", "gaussian", "--arch", "tiny_cnn", "--profile", "smoke", "--device", "cpu",
                         "--executor", "slurm", "--partition", "p1", "--dry-run", "--results", tmp_path)
    assert code == 0, err
    assert "--partition=p1" in out and "gaussian/tiny_cnn" in out and "--gpus" not in out
    code, out, err = cli("sweep", "--method", "gaussian", "--arch", "tiny_cnn", "--executor", "slurm", "--nproc", "2",
                         "--dry-run", "--results", tmp_path)
    assert code == 0, err
    assert "--gpus-per-node=2" in out  # --nproc K on a GPU run: K GPUs per job
