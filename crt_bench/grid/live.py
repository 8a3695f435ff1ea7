"""A grid as the results store and the scheduler see it now: ``crt-bench status`` and a detached grid's re-run.

The rows of ``RESULTS/grid_status.json`` (:mod:`crt_bench.store.grid_status`) name each job's SLURM job id and the
jobs it needs; the store says which jobs' work is done, one squeue call what the scheduler does with the rest.
Each job gets one of :data:`VIEW_STATES` and a reason. SLURM keeps a job whose ``afterok`` dependency failed
PENDING (reason DependencyNeverSatisfied) forever; such a job, and any job waiting on it, is *blocked*, with
the job it waits for named ("its teacher X was cancelled").
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from crt_bench.core.states import DONE_STATES
from crt_bench.grid.slurm import LIVE_STATES, NEVER_SATISFIED, queue_states
from crt_bench.store.grid_status import finished_jobs, grid_rows
from crt_bench.store.store import ResultsStore

FINISHED, RUNNING, PENDING, BLOCKED, CANCELLED, FAILED = "finished", "running", "pending", "blocked", "cancelled", \
    "failed"
VIEW_STATES = (FINISHED, RUNNING, PENDING, BLOCKED, CANCELLED, FAILED)
ENDED_BADLY = (BLOCKED, CANCELLED, FAILED)  # a job that needs one of these never starts
RUNNING_STATES = {"RUNNING", "CONFIGURING", "COMPLETING", "SIGNALING", "STAGE_OUT", "RESIZING"}
_PAST = {CANCELLED: "was cancelled", FAILED: "failed", BLOCKED: "is blocked"}


def grid_view(results: str | Path, rows: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per recorded row (jobs in submission order, then steps): key, state (:data:`VIEW_STATES`), why,
    slurm_job_id, run_id, log, step, scheduler (squeue's state and reason, "" when it has forgotten the job) and
    live (the scheduler still holds the job: pending, running or requeued, blocked ones too).
    Reads the store twice and calls squeue once (not at all when no row has a SLURM job id)."""
    rows = grid_rows(results) if rows is None else rows
    jobs = [row for row in rows if not row.get("step")]
    done = finished_jobs(ResultsStore(results), [(r["key"], r.get("run_key") or r["key"], bool(r.get("certify")))
                                                 for r in jobs if "run_key" in r])
    queue = queue_states([str(r["slurm_job_id"]) for r in rows if r.get("slurm_job_id")])
    view: dict[str, dict[str, Any]] = {}
    for row in jobs:
        view[row["key"]] = _job_view(row, done, queue, view)
    grid = list(view.values())
    out = list(grid)
    for row in rows:
        if row.get("step"):
            out.append(_step_view(row, queue, grid))
    return out


def _base(row: dict[str, Any], queue: dict[str, tuple[str, str]]) -> dict[str, Any]:
    sid = str(row.get("slurm_job_id") or "")
    state, reason = queue.get(sid, ("", "")) if sid else ("", "")
    return {"key": row["key"], "label": row.get("label") or row["key"], "state": "", "why": "", "slurm_job_id": sid,
            "run_id": row.get("run_id") or "", "log": row.get("log") or "", "step": bool(row.get("step")),
            "scheduler": f"{state} ({reason})" if reason and reason not in ("None", "") else state,
            "live": state in LIVE_STATES}


def _job_view(row: dict[str, Any], done: dict[str, str], queue: dict[str, tuple[str, str]],
              view: dict[str, dict[str, Any]]) -> dict[str, Any]:
    out = _base(row, queue)
    sid = out["slurm_job_id"]
    state, reason = queue.get(sid, ("", "")) if sid else ("", "")
    if row["key"] in done or ("run_key" not in row and row.get("state") in DONE_STATES):
        return {**out, "state": FINISHED, "run_id": done.get(row["key"], out["run_id"])}
    if not sid or ("run_key" not in row and state not in LIVE_STATES):
        # never submitted (e.g. its teacher outside the grid is missing), or a parent that waited recorded the end
        recorded = str(row.get("state") or "")
        return {**out, "state": BLOCKED if recorded.startswith("blocked") else FAILED if recorded else PENDING,
                "why": row.get("error") or recorded}
    if state in RUNNING_STATES:
        return {**out, "state": RUNNING}
    if state in LIVE_STATES:  # pending, requeued, held: is it waiting on a job that will never finish?
        for need in row.get("needs") or []:
            seen = view.get(need["key"])
            if seen is not None and seen["state"] in ENDED_BADLY:
                return {**out, "state": BLOCKED, "why": f"its {need['role']} {need['key']} {_PAST[seen['state']]}"}
        if reason == NEVER_SATISFIED:
            return {**out, "state": BLOCKED, "why": "a job it needs did not finish (SLURM: DependencyNeverSatisfied)"}
        waits = [f"its {n['role']} {n['key']}" for n in row.get("needs") or []
                 if n["key"] in view and view[n["key"]]["state"] != FINISHED]
        return {**out, "state": PENDING, "why": f"waits for {', '.join(waits)}" if waits else reason}
    if state == "CANCELLED":
        return {**out, "state": CANCELLED, "why": f"SLURM job {sid} was cancelled"}
    if state:
        return {**out, "state": FAILED, "why": f"SLURM job {sid} ended {state}" + (
            f" ({reason})" if reason not in ("", "None") else "") + " without its work in the store"}
    return {**out, "state": FAILED, "why": f"SLURM job {sid} is gone from the queue without its work in the store"}


def _step_view(row: dict[str, Any], queue: dict[str, tuple[str, str]], grid: list[dict[str, Any]]) -> dict[str, Any]:
    """The timing or report job of a detached ``reproduce``: it runs once every grid job has ended (afterany)."""
    out = _base(row, queue)
    sid = out["slurm_job_id"]
    state, reason = queue.get(sid, ("", "")) if sid else ("", "")
    if state == "COMPLETED" or (not state and row.get("state") == FINISHED):  # the step marks itself finished
        return {**out, "state": FINISHED}
    if state in RUNNING_STATES:
        return {**out, "state": RUNNING}
    if state in LIVE_STATES:
        blocked = [g["key"] for g in grid if g["state"] == BLOCKED and g["slurm_job_id"]]
        if blocked:
            return {**out, "state": BLOCKED, "why": f"waits for the grid, where {len(blocked)} job(s) are blocked "
                    "and will never run: re-run the same command to resubmit them, or scancel them"}
        unfinished = [g for g in grid if g["state"] in (RUNNING, PENDING)]
        return {**out, "state": PENDING, "why": f"waits for {len(unfinished)} job(s) of the grid" if unfinished
                else reason}
    if state == "CANCELLED":
        return {**out, "state": CANCELLED, "why": f"SLURM job {sid} was cancelled"}
    if state:
        return {**out, "state": FAILED, "why": f"SLURM job {sid} ended {state}"}
    return {**out, "state": FAILED if sid else PENDING, "why": f"SLURM job {sid} is gone from the queue" if sid
            else row.get("error") or ""}


def summary_line(results: str | Path, view: list[dict[str, Any]]) -> str:
    """"grid in RESULTS: 6 jobs: 2 finished, 1 running, ..." (the grid's jobs; steps are listed after them)."""
    jobs = [v for v in view if not v["step"]]
    counts = [f"{sum(v['state'] == s for v in jobs)} {s}" for s in VIEW_STATES if any(v["state"] == s for v in jobs)]
    return f"grid in {results}: {len(jobs)} job(s): {', '.join(counts) or 'none'}"
