"""Grids of runs: through submitit on this machine (local executor) or on a SLURM cluster, or inline.

A ``GridSpec`` (methods x architectures x sigmas x seeds, plus CRT's teachers) expands into ``Job``s.
Each job trains one model and certifies it, in its own process, writing its own parquet parts (the
store is append-only, so concurrent jobs never overwrite each other). CRT students wait until their
teacher's job has finished. Every job carries a stable key, recorded with its run; re-running a grid
skips finished jobs and resumes interrupted ones, so a killed ``make reproduce`` continues where it
stopped. Failed jobs are reported with their log path. submitit is imported only where a grid is submitted.
"""
from __future__ import annotations

import logging
import re
import signal
import time
from dataclasses import replace
from importlib import import_module
from pathlib import Path
from typing import Any

import pandas as pd

from crt_bench.core.console import stderr_console
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.signals import stop_signals
from crt_bench.core.states import JobState
from crt_bench.grid import execute
from crt_bench.grid.gpus import default_parallel, has_room, release
from crt_bench.grid.inline import InlineExecutor
from crt_bench.grid.jobs import Job, job_work
from crt_bench.grid.slurm import NEVER_SATISFIED, ended_without_result
from crt_bench.grid.watch import JobWatch
from crt_bench.store.grid_status import finished_jobs, save_grid_status
from crt_bench.store.store import ResultsStore

log = logging.getLogger(__name__)

GRID_STOPPED_HINT = ("stopped: the running jobs were stopped at their last checkpoint; run the same command again to "
                     "continue (finished work is kept)")


def run_grid(jobs: list[Job], results: str | Path, executor: Any, *, max_parallel: int | None = None,
             poll_s: float = 1.0, task: Any = None, expect_device: str | None = None,
             attached: dict[str, Any] | None = None) -> pd.DataFrame:
    """Submit jobs as their teachers finish, at most ``max_parallel`` at a time; one status row per job.

    ``max_parallel`` None: one job per GPU of a local executor's GPU pool (:mod:`crt_bench.grid.gpus`), else
    one at a time. A pooled job starts only when GPUs of its own are free, and gives them back when it ends.
    ``task``: what each job runs (default: :func:`~crt_bench.grid.execute.execute_job`, through
    :class:`~crt_bench.grid.task.GridTask` for submitit), called as ``task(job, results)``.
    ``expect_device``: the device the grid's preflight announced; a job on another refuses to start.
    ``attached``: job key -> the handle of a job already submitted (a detached grid's live SLURM job,
    :func:`crt_bench.grid.detach.attach`): waited for as if submitted here, never submitted again.

    While jobs run, their output reaches the console line by line (:class:`JobWatch`). Ctrl-C or SIGTERM
    stops the running jobs (each checkpoints and marks its run interrupted) before re-raising, so no
    worker outlives the grid. A job whose teacher failed is never started. The outcome is also written
    to ``results/grid_status.json`` for the report. The store is read once to start and at most once
    per poll (teachers outside the grid), never once per job.
    """
    if task is None:
        task = (execute.execute_job if isinstance(executor, InlineExecutor)
                else import_module("crt_bench.grid.task").GridTask())
    max_parallel = default_parallel(executor) if max_parallel is None else max_parallel

    results = str(results)
    store = ResultsStore(results)
    state: dict[str, dict[str, Any]] = {}
    done = finished_jobs(store, [job_work(job) for job in jobs])
    for job in jobs:
        state[job.key] = {"key": job.key, "state": JobState.SKIPPED if job.key in done else JobState.PENDING,
                          "run_id": done.get(job.key, ""), "error": "", "log": ""}
    watch = JobWatch(stderr_console())
    running: dict[str, Any] = {}
    for key, handle in (attached or {}).items():
        if key in state and state[key]["state"] == JobState.PENDING:
            running[key] = handle
            watch.add(key, handle)
            state[key]["state"] = JobState.RUNNING
            _note_slurm_id(state[key], handle)
            log.info(f"attached to {key}: SLURM job {handle.job_id}")
    try:
        with stop_signals((signal.SIGTERM,)):
            while True:
                outside: dict[str, str] | None = None  # finished runs of teachers outside the grid, read once a poll
                for job in jobs:
                    s = state[job.key]
                    if s["state"] != JobState.PENDING or len(running) >= max_parallel or not has_room(executor):
                        continue
                    waiting = False
                    for need in job.needs:  # the teacher, a shared denoiser: each must have finished first
                        t = state.get(need.key)
                        if t is None:
                            outside = store.finished_runs() if outside is None else outside
                            t = {"state": JobState.FINISHED if need.key in outside else JobState.MISSING}
                        if JobState(t["state"]).failed:
                            _block(s, need, t["state"])
                            waiting = True
                            break
                        waiting = waiting or not JobState(t["state"]).done
                    if waiting:
                        continue
                    sent = job if expect_device is None else replace(job, expect_device=expect_device)
                    running[job.key] = executor.submit(task, sent, results)
                    watch.add(job.key, running[job.key], label=job.label)
                    s["state"] = JobState.RUNNING
                    _note_slurm_id(s, running[job.key])
                    log.info(f"submitted {job.key}")
                watch.pump()
                ended = ended_without_result(running)  # cancelled on the scheduler: submitit would wait forever
                for key, handle in list(running.items()):
                    raised: Exception | None = None
                    try:
                        if key in ended:
                            raised = CrtBenchError(ended[key])
                            if NEVER_SATISFIED in ended[key]:  # an attached job whose teacher's job failed
                                handle.cancel(check=False)  # SLURM would keep it pending forever
                        elif not handle.done():
                            continue
                    except Exception as err:  # the debug executor runs the job inside done()
                        raised = err
                    del running[key]
                    release(executor, handle)
                    watch.remove(key)
                    _collect(state[key], key, handle, raised)
                if not running and not any(s["state"] == JobState.PENDING and _ready(job, state) for job, s in
                                           ((j, state[j.key]) for j in jobs)):
                    for job in jobs:
                        if state[job.key]["state"] == JobState.PENDING:
                            _block(state[job.key], job.teacher, JobState.NOT_FINISHED)
                    break
                if running:
                    time.sleep(poll_s)
    except (KeyboardInterrupt, CrtBenchError) as err:  # stopped, or a submission refused: no job left behind
        stopped = watch.stop_all()
        why = str(err) if isinstance(err, CrtBenchError) else "the grid was stopped (Ctrl-C or SIGTERM)"
        for key in running:
            state[key]["state"], state[key]["error"] = JobState.INTERRUPTED, why
        if stopped:
            log.warning(f"stopped {len(stopped)} running job(s): {', '.join(stopped)}; re-run the same command to "
                        "resume them from their last checkpoint")
        save_grid_status(results, state)
        raise
    status = pd.DataFrame(list(state.values()))
    save_grid_status(results, state)
    return status


def _note_slurm_id(s: dict[str, Any], handle: Any) -> None:
    """A SLURM job's id in the job's status row (``crt-bench status`` names it)."""
    if type(handle).__name__ == "SlurmJob":
        s["slurm_job_id"] = str(handle.job_id)


def _collect(s: dict[str, Any], key: str, handle: Any, raised: Exception | None = None) -> None:
    """A finished job's run id, or its whole error message (never cut) and its log path."""
    try:
        if raised is not None:
            raise raised
        s["run_id"] = handle.results()[0]  # task 0 (rank 0) of a multi-task job speaks for it
        s["state"] = JobState.FINISHED
        log.info(f"finished {key}: {s['run_id']}")
    except Exception as err:  # the job's own exception, re-raised by submitit
        s["state"] = JobState.FAILED
        s["error"] = _error_line(err)
        s["log"] = str(getattr(handle, "paths", None) and handle.paths.stderr or "")
        log.error(f"failed {key}: {s['error']}" + (f" (log: {s['log']})" if s["log"] else ""))


def _block(s: dict[str, Any], need: Job | None, need_state: str) -> None:
    """``s``'s job cannot start: ``need`` (its teacher or another job it needs) did not finish."""
    s["state"] = JobState.BLOCKED
    s["error"] = f"not started: its teacher {need.key if need else '?'} did not finish ({need_state})"


def _error_line(err: BaseException) -> str:
    """The job's own exception message out of submitit's report (which wraps the remote traceback), whole."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    raised = [i for i, line in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b.*:", line)]
    if not raised:  # the exception itself (an in-process executor): its whole message, with its type
        whole = " ".join(lines)  # unless it is one of crt-bench's own, written for the user
        if isinstance(err, CrtBenchError) and whole:
            return whole
        return f"{type(err).__name__}: {whole}" if whole else type(err).__name__
    # A message may span lines: keep everything from the last exception line to submitit's own footer.
    message = lines[raised[-1]:]
    footer = next((i for i, line in enumerate(message) if line.startswith("-----")), len(message))
    return " ".join(message[:footer])


def _ready(job: Job, state: dict[str, dict[str, Any]]) -> bool:
    return all(state.get(need.key) is None or JobState(state[need.key]["state"]).done for need in job.needs)
