"""``crt-bench status RESULTS``: a grid as the store and the scheduler see it; and what ``--detach`` submitted."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from crt_bench.cli.options import JsonOpt, ResultsDirArg
from crt_bench.cli.output import out, print_json
from crt_bench.core.errors import CrtBenchError


def status(results_dir: ResultsDirArg = Path("results"), json: JsonOpt = False) -> None:
    """Every job of the last grid: finished, running, pending, blocked (and by which job), cancelled or failed;
    its SLURM job id and run id. Reads the store and asks the scheduler once (squeue)."""
    from crt_bench.grid.live import grid_view, summary_line
    from crt_bench.store.grid_status import GRID_STATUS_FILE, grid_rows

    if not (results_dir / GRID_STATUS_FILE).is_file():
        what = ("a crt-bench results folder where no grid has run" if (results_dir / "tables").is_dir()
                else "not a crt-bench results folder")
        raise CrtBenchError(f"{results_dir} is {what} (no {GRID_STATUS_FILE}): pass the --results folder of a "
                            "sweep or reproduce")
    view = grid_view(results_dir, grid_rows(results_dir))
    if json:
        print_json(view)
        return
    out.print(summary_line(results_dir, view), markup=False, soft_wrap=True, highlight=False)
    for v in view:
        out.print(status_line(v), markup=False, soft_wrap=True, highlight=False)


def status_line(v: dict[str, Any]) -> str:
    """``KEY: STATE[: WHY] (slurm ID, run RUN)``: one job of :func:`crt_bench.grid.live.grid_view`."""
    tags = [f"slurm {v['slurm_job_id']}"] if v["slurm_job_id"] else []
    tags += [f"run {v['run_id']}"] if v["run_id"] else []
    tags += [f"log {v['log']}"] if v["log"] and v["state"] in ("failed", "cancelled") else []
    return (f"{'[' + v['key'] + ' job]' if v['step'] else v['key']}: {v['state']}" + (f": {v['why']}" if v["why"]
                                                                                       else "")
            + (f" ({', '.join(tags)})" if tags else ""))


def print_submitted(rows: list[dict[str, Any]], results: Path) -> None:
    """What ``--detach`` submitted, attached to or left out, and how to follow it."""
    from crt_bench.core.states import JobState

    live = [r for r in rows if r["state"] == JobState.SUBMITTED]
    for r in rows:
        name = f"[{r['key']} job]" if r.get("step") else r["key"]
        if r in live:
            what = ("attached to the live SLURM job " if r.get("attached") else "submitted: SLURM job ") + str(
                r["slurm_job_id"])
        elif r["state"] == JobState.SKIPPED:
            what = f"finished already (run {r['run_id']})"
        else:
            what = r.get("error") or str(r["state"])
        out.print(f"{name}: {what}", markup=False, soft_wrap=True, highlight=False)
    new = sum(not r.get("attached") for r in live)
    out.print(f"{new} SLURM job(s) submitted, {len(live) - new} attached; the scheduler runs them in order, this "
              f"command may exit now. Follow them: crt-bench status {results}"
              + (f" (or squeue -j {','.join(str(r['slurm_job_id']) for r in live)})" if live else "")
              + "; the same command again attaches to the live jobs", markup=False, soft_wrap=True, highlight=False)
