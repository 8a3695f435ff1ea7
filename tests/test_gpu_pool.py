"""A local grid on a machine with GPUs: each job gets GPUs of its own (crt_bench.grid.gpus), no two running
jobs share one, ``--nproc K`` jobs get K; the GPUs are faked (the parent's CUDA_VISIBLE_DEVICES and count)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from gpu_pool_jobs import record_env

from crt_bench.core.errors import CrtBenchError
from crt_bench.grid.executors import make_executor
from crt_bench.grid.gpus import GpuPool, GpuPoolExecutor, visible_gpus
from crt_bench.grid.jobs import Job
from crt_bench.grid.runner import run_grid

FOUR = ["0", "1", "2", "3"]


def _jobs(count: int) -> list[Job]:
    return [Job("gaussian", "tiny_cnn", seed=seed, profile="smoke", certify=False) for seed in range(count)]


def _records(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((folder / "env").glob("*.json"))]


def _most_at_once(records: list[dict]) -> int:
    # The most intervals holding one instant: the maximum is reached at some job's start (overlapping t
    # pairwise is not enough: two jobs that both overlap t may not overlap each other).
    return max(sum(r["start"] <= t["start"] < r["end"] for r in records) for t in records)


@pytest.fixture
def worker_imports_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """The job processes unpickle ``record_env`` by reference: they need this folder on their path."""
    here = str(Path(__file__).parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("GPU_POOL_JOB_SLEEP", "1.5")


def test_visible_gpus_follow_the_parents_cuda_visible_devices_and_count() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "3,1,GPU-ab"}, count=3) == ["3", "1", "GPU-ab"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, count=2) == ["0", "1"]  # CUDA sees two of them
    assert visible_gpus({}, count=2) == ["0", "1"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, count=0) == []


def test_the_pool_never_hands_one_gpu_to_two_jobs_unless_asked() -> None:
    pool = GpuPool(FOUR, per_job=2)
    first, second = pool.take(), pool.take()
    assert first == ("0", "1") and second == ("2", "3") and pool.take() is None
    pool.give_back(first)
    assert pool.take() == ("0", "1")
    shared = GpuPoolExecutor(None, GpuPool(["0", "1"]), max_parallel=4)  # asked for 4 jobs on 2 GPUs
    assert shared.parallel == 4 and shared.pool.jobs_per_gpu == 2
    assert sorted(shared.pool.take() + shared.pool.take() + shared.pool.take() + shared.pool.take()) == [
        "0", "0", "1", "1"]


def test_nproc_above_the_visible_gpus_is_one_line_before_anything_is_made(tmp_path: Path) -> None:
    with pytest.raises(CrtBenchError, match=r"--nproc 5 gives each job 5 GPUs, but this machine shows 4"):
        make_executor("local", tmp_path / "submitit", nproc=5, visible=FOUR)
    with pytest.raises(CrtBenchError, match="CUDA_VISIBLE_DEVICES"):
        make_executor("local", tmp_path / "submitit", device="cuda:1", visible=FOUR)
    assert not (tmp_path / "submitit").exists()
    # No GPU, or --device cpu: CPU jobs as before (a plain submitit executor), --nproc ranks on gloo
    assert not isinstance(make_executor("local", tmp_path / "cpu", nproc=2, visible=[]), GpuPoolExecutor)
    assert not isinstance(make_executor("local", tmp_path / "cpu", device="cpu", visible=FOUR), GpuPoolExecutor)


def test_six_jobs_on_four_gpus_run_four_at_once_each_on_its_own_gpu(tmp_path: Path, worker_imports_tests) -> None:
    ex = make_executor("local", tmp_path / "submitit", visible=FOUR)
    status = run_grid(_jobs(6), tmp_path, ex, poll_s=0.05, task=record_env)
    assert list(status["state"]) == ["finished"] * 6, status["error"].tolist()
    records = _records(tmp_path)
    assert len(records) == 6 and all(r["ntasks"] == "1" for r in records)
    assert all(r["cuda"] in FOUR for r in records)  # one GPU each, never submitit's "" nor every job's "0"
    assert 2 <= _most_at_once(records) <= 4
    for r in records:  # no two jobs that ran at the same time shared a GPU
        assert not [t for t in records if t is not r and t["cuda"] == r["cuda"]
                    and r["start"] < t["end"] and t["start"] < r["end"]]
    assert len({r["cuda"] for r in records}) == 4
    assert all(n == 0 for n in ex.pool.users.values())  # every GPU came back


def test_an_nproc_2_job_gets_two_gpus_shared_by_its_two_ranks(tmp_path: Path, worker_imports_tests) -> None:
    ex = make_executor("local", tmp_path / "submitit", nproc=2, visible=FOUR)
    assert ex.parallel == 2  # four GPUs hold two such jobs
    status = run_grid(_jobs(3), tmp_path, ex, poll_s=0.05, task=record_env)
    assert list(status["state"]) == ["finished"] * 3, status["error"].tolist()
    records = _records(tmp_path)
    assert len(records) == 6 and {r["ntasks"] for r in records} == {"2"}
    by_job: dict[str, set[str]] = {}
    for r in records:
        by_job.setdefault(r["key"], set()).add(r["cuda"])
    assert all(len(cudas) == 1 and len(next(iter(cudas)).split(",")) == 2 for cudas in by_job.values())
    assert {c for cudas in by_job.values() for c in cudas} <= {"0,1", "2,3"}


def test_a_job_on_another_device_than_the_preflight_announced_refuses_in_one_line(tmp_path: Path) -> None:
    """The first GPU check's failure mode: the grid announced the GPU, the job resolved to the CPU."""
    from crt_bench.grid.execute import check_job_device

    status = run_grid(_jobs(1), tmp_path, make_executor("inline", tmp_path), poll_s=0.0,
                      expect_device="NVIDIA H200")
    error = status.iloc[0]["error"]
    assert list(status["state"]) == ["failed"] and "\n" not in error
    assert "refuses to start: it would run on cpu" in error and "announced NVIDIA H200" in error
    assert not (tmp_path / "tables").exists(), "nothing written"
    check_job_device(Job("gaussian", "tiny_cnn", device="cpu", expect_device="cpu"))  # the same device: it runs
    status = run_grid(_jobs(1), tmp_path / "ok", make_executor("inline", tmp_path), poll_s=0.0, expect_device="cpu",
                      task=lambda job, results: job.expect_device)
    assert list(status["run_id"]) == ["cpu"]  # the job received what was announced


def test_a_run_records_which_of_the_machines_gpus_it_ran_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from crt_bench.core.provenance import physical_gpu

    assert physical_gpu(torch.device("cpu")) == ""
    assert physical_gpu(torch.device("cuda", 1), {"CUDA_VISIBLE_DEVICES": "2,3"}) == "3"  # a job's own GPUs
    assert physical_gpu(torch.device("cuda", 1), {}) == "1"


@pytest.mark.parametrize("command", [["sweep", "--method", "gaussian", "--arch", "tiny_cnn"],
                                     ["reproduce", "--profile", "smoke"]])
def test_nproc_above_the_gpus_is_one_line_and_submits_nothing(command: list[str], tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from test_cli import assert_user_error, cli

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # four GPUs, faked
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Fake GPU")
    results = tmp_path / "results"
    code, out, err = cli(*command, "--nproc", "5", "--results", results)
    assert_user_error(code, err, "--nproc 5 gives each job 5 GPUs, but this machine shows 4")
    assert out == "" and not results.exists()
