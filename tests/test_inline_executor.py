"""The inline executor runs a grid without submitit: jobs in order, teachers first, errors kept per job."""
from __future__ import annotations

import sys

import pytest

from crt_bench.core.errors import CrtBenchError
from crt_bench.grid import execute as execute_mod
from crt_bench.grid.executors import make_executor
from crt_bench.grid.inline import InlineExecutor, InlineJob
from crt_bench.grid.jobs import GridSpec
from crt_bench.grid.runner import run_grid


def test_inline_job_runs_once_and_keeps_its_error() -> None:
    calls = []
    ok = InlineExecutor().submit(lambda a, *, times: calls.append(a) or a * times, 21, times=2)
    assert ok.done() and ok.done() and ok.results() == [42]
    assert calls == [21]  # run once, on the first question
    cancelled = InlineJob(lambda: calls.append("ran"), (), {})
    cancelled.cancel()
    with pytest.raises(CrtBenchError, match="cancelled"):
        cancelled.done()
    assert calls == [21]  # a job stopped before it started never runs
    bad = InlineJob(lambda: 1 / 0, (), {})
    for _ in range(2):
        with pytest.raises(ZeroDivisionError):
            bad.done()


def test_make_executor_inline_needs_no_submitit(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)  # "import submitit" now raises ImportError
    assert isinstance(make_executor("inline", tmp_path), InlineExecutor)
    with pytest.raises(CrtBenchError, match="inline executor runs jobs in this process"):
        make_executor("inline", tmp_path, nproc=2)
    with pytest.raises(CrtBenchError, match="pip install submitit"):
        make_executor("local", tmp_path)


def test_inline_grid_runs_teacher_then_students_and_blocks_on_failure(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "submitit", None)
    order = []

    def fake_execute(job, results):
        order.append(job.method)
        if job.method == "gaussian":
            raise CrtBenchError("gaussian diverged")
        return f"run-{job.method}-{job.arch}"

    monkeypatch.setattr(execute_mod, "execute_job", fake_execute)
    jobs = GridSpec(methods=["gaussian", "crt"], archs=["tiny_cnn"], teacher_archs=["tiny_cnn"],
                    teacher_method="smoothmix").jobs()
    status = run_grid(jobs, tmp_path, make_executor("inline", tmp_path), poll_s=0.0)
    states = dict(zip(status["key"], status["state"]))
    assert order[0] == "smoothmix" and sorted(order) == ["crt", "gaussian", "smoothmix"]
    assert sorted(states.values()) == ["failed", "finished", "finished"]
    failed = status[status["state"] == "failed"].iloc[0]
    assert "gaussian diverged" in failed["error"] and failed["log"] == ""


def test_a_failed_jobs_error_keeps_its_type_and_every_line(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    """The first GPU run reported only the last line of a TypeError (one of torch's signature hints)."""
    monkeypatch.setitem(sys.modules, "submitit", None)

    def fake_execute(job, results):
        raise TypeError("zeros() received an invalid combination of arguments:\n * (size, names)\n * (size, out)")

    monkeypatch.setattr(execute_mod, "execute_job", fake_execute)
    jobs = GridSpec(methods=["gaussian"], archs=["tiny_cnn"]).jobs()
    status = run_grid(jobs, tmp_path, make_executor("inline", tmp_path), poll_s=0.0)
    error = status.iloc[0]["error"]
    assert error.startswith("TypeError: zeros() received") and "* (size, names)" in error and error.endswith("(size, out)")
