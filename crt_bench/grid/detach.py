"""A grid its parent may leave (``--detach``): every job submitted to SLURM at once, the order carried by the
scheduler's dependencies, the job ids recorded in the store; and attaching to such a grid again.

A job waits for the jobs it needs (:attr:`~crt_bench.grid.jobs.Job.named_needs`: a CRT student its teacher, a
certification its training) through ``--dependency=afterok:ID``; jobs whose work is already in the store are
not submitted, and neither are jobs whose teacher is neither in the grid nor in the store. A detached
``reproduce`` adds its timing-probe and report jobs (:class:`Step`) after the whole grid (``afterany``), so
nothing needs the parent once it has submitted. ``RESULTS/grid_status.json`` holds every job's SLURM job id
(rewritten after each submission), which ``crt-bench status`` reads (:mod:`crt_bench.grid.live`).

Running the grid again while its jobs live attaches to them: a job the scheduler still runs or will run keeps
its SLURM job; a blocked one (its teacher cancelled or failed) is cancelled and submitted again after its
resubmitted teacher; a pending job whose teacher is submitted anew follows it (its dependency named the old id).
A refused submission or a stop while submitting cancels what this call submitted: nothing half-submitted.
"""
from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from importlib import import_module
from pathlib import Path
from typing import Any

from crt_bench.core.errors import CrtBenchError
from crt_bench.core.signals import stop_signals
from crt_bench.core.states import JobState
from crt_bench.grid.executors import import_submitit
from crt_bench.grid.gpus import submit_single
from crt_bench.grid.jobs import Job, job_work
from crt_bench.grid.live import BLOCKED, CANCELLED, FINISHED, PENDING, RUNNING, grid_view
from crt_bench.grid.slurm import scancel
from crt_bench.store.grid_status import finished_jobs, grid_rows, save_grid_status
from crt_bench.report.build import build_all
from crt_bench.store.store import ResultsStore
from crt_bench.timing.grid import run_plan_timing

log = logging.getLogger(__name__)
ATTACHED = (RUNNING, PENDING)  # what a re-run keeps: the scheduler still runs or will run it


@dataclass(frozen=True)
class Step:
    """A job after the whole grid (``afterany``: failed jobs too): ``fn(results, **kwargs)``, one process."""

    key: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any] = field(default_factory=dict)


def in_order(jobs: list[Job]) -> list[Job]:
    """``jobs`` with every job after the jobs of the grid it needs (the grid's order otherwise)."""
    keys = {job.key for job in jobs}
    placed: dict[str, Job] = {}
    left = list(jobs)
    while left:
        ready = [j for j in left if all(n.key in placed or n.key not in keys for n in j.needs)]
        if not ready:  # a cycle cannot come from Job (a need is built before its dependant): keep the rest
            ready = left
        for job in ready:
            placed[job.key] = job
        left = [j for j in left if j.key not in placed]
    return list(placed.values())


def _row(job: Job) -> dict[str, Any]:
    key, run_key, certify = job_work(job)
    return {"key": key, "label": job.label, "state": JobState.PENDING, "run_id": "", "error": "", "log": "",
            "slurm_job_id": "", "run_key": run_key, "certify": certify,
            "needs": [{"key": need.key, "role": role} for role, need in job.named_needs]}


def _submit(executor: Any, dependency: str | None, fn: Callable[..., Any], *args: Any, single: bool = False,
            **kwargs: Any) -> Any:
    """Submit with sbatch's ``--dependency`` (None: none); the executor's own parameters are left as they were."""
    executor.update_parameters(dependency=dependency)
    try:
        return submit_single(executor, fn, *args, **kwargs) if single else executor.submit(fn, *args, **kwargs)
    finally:
        executor.update_parameters(dependency=None)


def submit_detached(jobs: list[Job], results: str | Path, executor: Any, *, steps: tuple[Step, ...] = (),
                    expect_device: str | None = None, task: Any = None) -> list[dict[str, Any]]:
    """Submit (or attach to) every job of the grid, then ``steps``; returns the rows recorded in
    ``grid_status.json`` (``state`` "submitted" with ``attached`` true for a job that was live already)."""
    results = str(results)
    task = import_module("crt_bench.grid.task").GridTask() if task is None else task
    order = in_order(jobs)
    before = grid_rows(results)
    seen = {v["key"]: v for v in grid_view(results, before)} if before else {}  # one squeue call
    store = ResultsStore(results)
    done = finished_jobs(store, [job_work(job) for job in order])
    rows: dict[str, dict[str, Any]] = {}
    ids: dict[str, str] = {}  # job key -> its live SLURM job id (attached or submitted now)
    new: list[str] = []  # SLURM job ids submitted by this call
    stale: list[str] = []  # recorded jobs the scheduler holds that can never run as recorded: cancelled
    outside: dict[str, str] | None = None

    def record() -> None:  # what is submitted so far, and what the earlier record said of the rest
        save_grid_status(results, [*rows.values(), *(r for r in before if r["key"] not in rows)])

    try:
        with stop_signals((signal.SIGTERM,)):
            for job in order:
                row = rows[job.key] = _row(job)
                old = seen.get(job.key)
                if job.key in done:
                    row.update(state=JobState.SKIPPED, run_id=done[job.key], slurm_job_id=old and old["slurm_job_id"]
                               or "")
                    continue
                follows_new = any(ids.get(n.key) in new for n in job.needs)
                if old and old["state"] in ATTACHED and not (old["state"] == PENDING and follows_new):
                    ids[job.key] = old["slurm_job_id"]
                    row.update(state=JobState.SUBMITTED, slurm_job_id=old["slurm_job_id"], log=old["log"],
                               attached=True)
                    continue
                if old and old["live"]:
                    stale.append(old["slurm_job_id"])
                deps, why = [], ""
                for role, need in job.named_needs:
                    if need.key in done or need.key in ids:
                        deps += [ids[need.key]] if need.key in ids else []
                        continue
                    if need.key in rows:  # in the grid, not done and not submitted: blocked itself
                        why = f"not submitted: its {role} {need.key} was not submitted"
                        break
                    outside = store.finished_runs() if outside is None else outside
                    if need.key not in outside:
                        why = f"not submitted: its {role} {need.key} is neither in the grid nor finished in {results}"
                        break
                if why:
                    row.update(state=JobState.BLOCKED, error=why)
                    continue
                sent = job if expect_device is None else replace(job, expect_device=expect_device)
                handle = _submit(executor, "afterok:" + ":".join(deps) if deps else None, task, sent, results)
                ids[job.key] = str(handle.job_id)
                new.append(ids[job.key])
                row.update(state=JobState.SUBMITTED, slurm_job_id=ids[job.key], log=str(handle.paths.stderr))
                log.info(f"submitted {job.key}: SLURM job {ids[job.key]}" + (f" after {', '.join(deps)}" if deps
                                                                              else ""))
                record()
            scancel(stale)  # before the steps: their afterany must not count the old ids
            grid_ids = [ids[job.key] for job in order if job.key in ids]
            previous: str | None = None
            for step in steps:
                old = seen.get(step.key)
                row = rows[step.key] = {"key": step.key, "label": step.key, "step": True, "state": JobState.SUBMITTED,
                                        "run_id": "", "error": "", "log": "", "slurm_job_id": ""}
                if old and old["live"] and (old["state"] == RUNNING or not new):  # new: the old afterany is stale
                    previous = old["slurm_job_id"]
                    row.update(slurm_job_id=previous, log=old["log"], attached=True)
                    continue
                if old and old["live"]:
                    scancel([old["slurm_job_id"]])
                after = [*grid_ids, *([previous] if previous else [])]
                handle = _submit(executor, "afterany:" + ":".join(after) if after else None, step.fn, results,
                                 single=True, **step.kwargs)
                previous = str(handle.job_id)
                new.append(previous)
                row.update(slurm_job_id=previous, log=str(handle.paths.stderr))
                log.info(f"submitted the {step.key} job: SLURM job {previous}")
            record()
    except BaseException as err:  # refused, or stopped while submitting: take back what this call submitted
        if new:
            try:
                scancel(new)
            except CrtBenchError as lost:  # the scheduler went away: say which jobs may be left
                log.error(f"could not cancel SLURM job(s) {', '.join(new)}: {lost}")
                raise err from None
            log.warning(f"cancelled the {len(new)} SLURM job(s) this call had submitted: {', '.join(new)}")
        for row in rows.values():
            if row.get("slurm_job_id") in new or row["state"] == JobState.PENDING:
                row.update(state=JobState.INTERRUPTED, slurm_job_id="", log="",
                           error=f"not submitted: {err}" if str(err) else "not submitted: the grid was stopped")
        record()
        raise
    return list(rows.values())


def attach(jobs: list[Job], results: str | Path, folder: str | Path, *,
           steps: tuple[str, ...] = ()) -> dict[str, Any]:
    """For a grid run by its parent (no ``--detach``): submitit handles of the jobs a detached grid left live
    (the parent waits for them instead of submitting them again). Blocked ones are cancelled (the parent
    submits them again after their teacher), and so are a detached reproduce's ``steps`` (the parent runs
    them itself); a job whose work is already in the store is left to end. No record with SLURM job ids: no
    squeue call."""
    before = grid_rows(results)
    if not any(row.get("slurm_job_id") for row in before):
        return {}
    keys = {job.key for job in jobs}
    view = [v for v in grid_view(results, before) if v["live"]]
    keep = {v["key"]: v["slurm_job_id"] for v in view if v["key"] in keys and not v["step"] and v["state"] in ATTACHED}
    # a job whose work is in the store may still be exiting: left alone (cancelled, its students' afterok would fail)
    scancel([v["slurm_job_id"] for v in view if (v["key"] in keys and v["state"] == BLOCKED) or v["key"] in steps])
    if not keep:
        return {}
    submitit = import_submitit()
    return {key: submitit.SlurmJob(folder=str(folder), job_id=sid) for key, sid in keep.items()}


def timing_step(results: str, **kwargs: Any) -> None:
    """A detached reproduce's timing probes (:func:`crt_bench.timing.grid.run_plan_timing`), marked finished."""
    run_plan_timing(results, **kwargs)
    _mark_step(results, "timing")


def report_step(results: str, *, out_dir: str, profile_note: str) -> None:
    """A detached reproduce's last job: the grid's rows as the grid ended (the report's missing cells), then
    every table and figure and REPORT.md (:func:`crt_bench.report.build.build_all`)."""
    rows = grid_rows(results)
    view = {v["key"]: v for v in grid_view(results, rows)}
    ended = {FINISHED: JobState.FINISHED, BLOCKED: JobState.BLOCKED, CANCELLED: JobState.FAILED}
    for row in rows:
        seen = view.get(row["key"])
        if seen is not None and not row.get("step") and row.get("state") == JobState.SUBMITTED:
            row.update(state=ended.get(seen["state"], JobState.FAILED if seen["state"] not in ATTACHED
                                       else JobState.SUBMITTED), run_id=seen["run_id"], error=seen["why"])
    save_grid_status(results, rows)
    build_all(results, Path(out_dir), profile_note=profile_note)
    _mark_step(results, "report")


def _mark_step(results: str, key: str) -> None:
    rows = grid_rows(results)
    for row in rows:
        if row.get("step") and row["key"] == key:
            row["state"] = FINISHED
    save_grid_status(results, rows)
