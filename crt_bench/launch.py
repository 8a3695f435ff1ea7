"""Grids of runs: through submitit on this machine (local executor) or on a SLURM cluster, or inline.

A ``GridSpec`` (methods x architectures x sigmas x seeds, plus CRT's teachers) expands into ``Job``s.
Each job trains one model and certifies it, in its own process, writing its own parquet parts (the
store is append-only, so concurrent jobs never overwrite each other). CRT students wait until their
teacher's job has finished. Every job carries a stable key, recorded with its run; re-running a grid
skips finished jobs and resumes interrupted ones, so a killed ``make reproduce`` continues where it
stopped. Failed jobs are reported with their log path. submitit is imported only where a grid is submitted.
"""
from __future__ import annotations

import json
from importlib import import_module
import re
import time
from datetime import datetime, timezone
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console
from rich.text import Text

from crt_bench.config import get_profile, resolve_run_config
from crt_bench.errors import CrtBenchError
from crt_bench.inline_executor import InlineExecutor
from crt_bench.methods import get_method
from crt_bench.job_watch import JobWatch, interruptible
from crt_bench.results import ResultsStore, atomic_write_bytes

log = Console(stderr=True)
EXECUTORS = ("local", "slurm", "debug", "inline")


@dataclass(frozen=True)
class Job:
    method: str
    arch: str
    sigma: float = 0.25
    seed: int = 0
    profile: str = "smoke"
    teacher: "Job | None" = None  # CRT: the job whose run becomes --teacher
    teacher_dedicated: bool = False
    dataset: str | None = None
    data_dir: str | None = None
    epochs: int | None = None  # None: the profile's epoch_scale x this method's recipe epochs
    train_limit: int | None = None
    certify: bool = True
    teacher_ref: str | None = None  # a chain's root: an existing run id or model file as teacher (not a job)
    device: str = "auto"  # where the job trains and certifies; not part of its key (a run is a run anywhere)

    @property
    def key(self) -> str:
        parts = [self.method, self.arch, self.dataset or get_profile(self.profile).dataset, f"s{self.sigma:g}",
                 f"seed{self.seed}", self.profile]
        if self.epochs is not None:  # an explicit override: the same epochs for every method
            parts.append(f"e{self.epochs}")
        else:  # the profile's factor of each method's recipe: a changed factor is a different run
            parts.append(f"x{get_profile(self.profile).epoch_scale:g}")
        if self.train_limit is not None:
            parts.append(f"n{self.train_limit}")
        key = "/".join(parts)
        if self.teacher_ref is not None:
            key += f"<-[{self.teacher_ref}]"
        return key + (f"<-[{self.teacher.key}]" if self.teacher else "")

    @property
    def label(self) -> str:
        """A short name for console lines: method, arch, sigma, and the teacher's arch for CRT."""
        return (f"{self.method} {self.arch} s{self.sigma:g}" + (f" seed{self.seed}" if self.seed else "")
                + (f" <- {self.teacher.method} {self.teacher.arch}" if self.teacher else ""))


@dataclass
class GridSpec:
    methods: list[str]
    archs: list[str]
    sigmas: list[float] = field(default_factory=lambda: [0.25])
    seeds: list[int] = field(default_factory=lambda: [0])
    profile: str = "smoke"
    teacher_method: str = "smoothmix"
    teacher_archs: list[str] = field(default_factory=lambda: ["resnet110"])
    dataset: str | None = None
    data_dir: str | None = None
    epochs: int | None = None
    train_limit: int | None = None
    certify: bool = True
    certify_methods: list[str] | None = None  # None: certify every job; else only the teachers and these methods
    device: str = "auto"

    def _certified(self, method: str, common: dict) -> dict:
        certify = self.certify and (self.certify_methods is None or method in self.certify_methods)
        return dict(common, certify=certify)

    def jobs(self) -> list[Job]:
        """Teachers first, then every (method, arch, sigma, seed); CRT once per teacher architecture."""
        for name in self.methods:
            get_method(name)
        from crt_bench.config import check_sigma

        for sigma in self.sigmas:
            check_sigma(sigma)  # inf / nan / <= 0: one clear error before any job is submitted
        from crt_bench.archs import get_arch

        # Aliases (convnext) become canonical names (convnext_atto): one model, one name, one job key.
        archs = list(dict.fromkeys(get_arch(a).name for a in self.archs))
        teacher_archs = list(dict.fromkeys(get_arch(a).name for a in self.teacher_archs))
        common = dict(profile=self.profile, dataset=self.dataset, data_dir=self.data_dir, epochs=self.epochs,
                      train_limit=self.train_limit, certify=self.certify, device=self.device)
        out: dict[str, Job] = {}
        for sigma in self.sigmas:
            for seed in self.seeds:
                teachers = [Job(self.teacher_method, t, sigma, seed, **common) for t in teacher_archs]
                if "crt" in self.methods:
                    for t in teachers:
                        out.setdefault(t.key, t)
                for method in self.methods:
                    for arch in archs:
                        if get_method(method).needs_teacher:
                            for t in teachers:
                                job = Job(method, arch, sigma, seed, teacher=t, **self._certified(method, common))
                                out.setdefault(job.key, job)
                        else:
                            job = Job(method, arch, sigma, seed, **self._certified(method, common))
                            out.setdefault(job.key, job)
        return list(out.values())


def _runs_for(store: ResultsStore, key: str) -> pd.DataFrame:
    runs = store.runs()
    if runs.empty or "job_key" not in runs:
        return pd.DataFrame(columns=["run_id", "status", "job_key"])
    return runs[runs["job_key"] == key]


def finished_run(store: ResultsStore, key: str) -> str | None:
    runs = _runs_for(store, key)
    done = runs[runs["status"] == "finished"]
    return str(done["run_id"].iloc[-1]) if not done.empty else None


def execute_job(job: Job, results: str) -> str:
    """Run one job to completion (train, or resume, or skip; then certify); returns its run id."""
    from crt_bench.certify_run import certify_run
    from crt_bench.checkpoint import CHECKPOINT_FILE
    from crt_bench.train import resume_run, train_run

    from crt_bench.distributed import broadcast_object, env_from

    store = ResultsStore(results)
    ranks = env_from()  # a multi-task job (--nproc): rank 0 decides, every rank trains, rank 0 certifies
    decision: tuple[str, str | None] | None = None
    if ranks.is_main:
        try:
            decision = _decide(job, store, CHECKPOINT_FILE)
        except CrtBenchError as err:  # every rank must hear it, or the others wait for the broadcast forever
            decision = ("error", str(err))
    action, run_id = broadcast_object(decision, ranks)
    if action == "error":
        raise CrtBenchError(str(run_id))
    if action == "resume":
        run_id = resume_run(run_id, store, progress=False)
    elif action == "new":
        cfg = resolve_run_config(job.method, job.arch, profile=job.profile, dataset=job.dataset, sigma=job.sigma,
                                 epochs=job.epochs, seed=job.seed, teacher=run_id, train_limit=job.train_limit,
                                 teacher_dedicated=job.teacher_dedicated, data_dir=job.data_dir, job_key=job.key,
                                 device=job.device)
        run_id = train_run(cfg, store, progress=False)
    if not ranks.is_main:
        return run_id
    if job.certify and not _certified(store, run_id):
        # Resumable: a certification cut short (kill, requeue) continues with the images it lacks.
        certify_run(run_id, store, get_profile(job.profile).certify, data_dir=job.data_dir, seed=job.seed,
                    device=job.device, progress=False)
    return run_id


def _decide(job: Job, store: ResultsStore, checkpoint_file: str) -> tuple[str, str | None]:
    """("done", run id), ("resume", run id) or ("new", teacher run id or reference) for ``job``."""
    run_id = finished_run(store, job.key)
    if run_id is not None:
        return "done", run_id
    unfinished = _runs_for(store, job.key)
    resumable = [r for r in unfinished["run_id"] if (store.run_dir(r) / checkpoint_file).is_file()]
    if resumable:
        return "resume", resumable[-1]
    teacher = job.teacher_ref
    if job.teacher is not None:
        teacher = finished_run(store, job.teacher.key)
        if teacher is None:
            raise CrtBenchError(f"teacher job {job.teacher.key} has no finished run")
    return "new", teacher


def make_executor(kind: str, folder: str | Path, *, partition: str | None = None, gpus: int = 1,
                  time_min: int = 24 * 60, cpus_per_task: int | None = None, array_parallelism: int = 16,
                  slurm_extra: dict[str, Any] | None = None, nproc: int = 1) -> Any:
    """submitit's ``local`` (subprocesses), ``slurm`` (sbatch), ``debug`` (in-process), or ``inline`` (in-process,
    without submitit: :mod:`crt_bench.inline_executor`).

    ``nproc`` > 1: every job runs as that many tasks, which :class:`crt_bench.grid_task.GridTask` turns into
    the ranks of one data-parallel run (crt_bench.distributed); on SLURM the node's tasks (``--ntasks-per-node``).
    """
    if nproc < 1:
        raise CrtBenchError(f"--nproc must be >= 1, got {nproc}")
    if kind not in EXECUTORS:
        raise CrtBenchError(f"unknown executor {kind!r}; valid: {', '.join(EXECUTORS)}")
    if kind in ("inline", "debug") and nproc > 1:
        raise CrtBenchError(f"the {kind} executor runs jobs in this process: --nproc needs local or slurm")
    if kind == "inline":  # no submitit needed (crt_bench.inline_executor)
        return InlineExecutor()
    submitit = import_submitit()
    if kind == "local":
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=time_min, tasks_per_node=nproc)
    elif kind == "debug":
        ex = submitit.DebugExecutor(folder=str(folder))
    elif kind == "slurm":
        try:
            ex = submitit.SlurmExecutor(folder=str(folder))
        except RuntimeError as err:  # submitit checks for srun
            raise CrtBenchError(f"cannot submit to SLURM from here ({err}); `--dry-run` shows the sbatch script "
                                "that would be submitted") from None
        ex.update_parameters(**slurm_parameters(partition=partition, gpus=gpus, time_min=time_min,
                                                cpus_per_task=cpus_per_task, array_parallelism=array_parallelism),
                             ntasks_per_node=nproc, **(slurm_extra or {}))
    return ex


def import_submitit() -> Any:
    """submitit, imported only where a grid is submitted: reports, plots and single commands never need it."""
    try:
        import submitit
    except ImportError as err:
        raise CrtBenchError(f"grids (sweep, reproduce, chain) run jobs through submitit, which does not import "
                            f"({err}): `pip install submitit`, or use single commands (run, certify, time)") from None
    return submitit


def slurm_parameters(*, partition: str | None = None, gpus: int = 1, time_min: int = 24 * 60,
                     cpus_per_task: int | None = None, array_parallelism: int = 16) -> dict[str, Any]:
    params: dict[str, Any] = dict(job_name="crt-bench", time=time_min, gpus_per_node=gpus,
                                  array_parallelism=array_parallelism)
    if partition:
        params["partition"] = partition
    if cpus_per_task:
        params["cpus_per_task"] = cpus_per_task
    return params


def sbatch_preview(folder: str | Path, **params: Any) -> str:
    """The sbatch script submitit renders for a job with these parameters; nothing is submitted.

    Uses submitit's own renderer, so it works on a machine without SLURM (for ``--dry-run``).
    """
    import_submitit()
    from submitit.slurm.slurm import _make_sbatch_string

    params = {k: v for k, v in params.items() if k != "array_parallelism"}  # array-level, not in the script
    return _make_sbatch_string(command="python -u -m submitit.core._submit <folder>", folder=str(folder), **params)


GRID_STATUS_FILE = "grid_status.json"  # the last grid's outcome per job, read by the report


def run_grid(jobs: list[Job], results: str | Path, executor: Any, *, max_parallel: int = 1,
             poll_s: float = 1.0) -> pd.DataFrame:
    """Submit jobs as their teachers finish, at most ``max_parallel`` at a time; one status row per job.

    While jobs run, their output reaches the console line by line (:class:`JobWatch`). Ctrl-C or SIGTERM
    stops the running jobs (each checkpoints and marks its run interrupted) before re-raising, so no
    worker outlives the grid. A job whose teacher failed is never started. The outcome is also written
    to ``results/grid_status.json`` for the report.
    """
    task = execute_job if isinstance(executor, InlineExecutor) else import_module("crt_bench.grid_task").GridTask()

    results = str(results)
    store = ResultsStore(results)
    state: dict[str, dict[str, Any]] = {}
    for job in jobs:
        done = finished_run(store, job.key)
        certified = done is not None and (not job.certify or _certified(store, done))
        state[job.key] = {"key": job.key, "state": "skipped (finished)" if certified else "pending",
                          "run_id": done if certified else "", "error": "", "log": ""}
    watch = JobWatch(log)
    running: dict[str, Any] = {}
    try:
        with interruptible():
            while True:
                for job in jobs:
                    s = state[job.key]
                    if s["state"] != "pending" or len(running) >= max_parallel:
                        continue
                    if job.teacher is not None:
                        t = state.get(job.teacher.key,
                                      {"state": "finished" if finished_run(store, job.teacher.key) else "missing"})
                        if t["state"].startswith(("failed", "blocked", "interrupted")) or t["state"] == "missing":
                            _block(s, job, t["state"])
                            continue
                        if t["state"] not in ("finished", "skipped (finished)"):
                            continue
                    running[job.key] = executor.submit(task, job, results)
                    watch.add(job.key, running[job.key], label=job.label)
                    s["state"] = "running"
                    log.print(Text.assemble(("submitted ", "bold"), job.key), soft_wrap=True, highlight=False)
                watch.pump()
                for key, handle in list(running.items()):
                    raised: Exception | None = None
                    try:
                        if not handle.done():
                            continue
                    except Exception as err:  # the debug executor runs the job inside done()
                        raised = err
                    del running[key]
                    watch.remove(key)
                    _collect(state[key], key, handle, raised)
                if not running and not any(s["state"] == "pending" and _ready(job, state) for job, s in
                                           ((j, state[j.key]) for j in jobs)):
                    for job in jobs:
                        if state[job.key]["state"] == "pending":
                            _block(state[job.key], job, "not finished")
                    break
                if running:
                    time.sleep(poll_s)
    except KeyboardInterrupt:
        stopped = watch.stop_all()
        for key in running:
            state[key]["state"], state[key]["error"] = "interrupted", "the grid was stopped (Ctrl-C or SIGTERM)"
        if stopped:
            log.print(f"stopped {len(stopped)} running job(s): {', '.join(stopped)}; re-run the same command to "
                      "resume them from their last checkpoint", markup=False, highlight=False, soft_wrap=True)
        _save_status(results, state)
        raise
    status = pd.DataFrame(list(state.values()))
    _save_status(results, state)
    return status


def _collect(s: dict[str, Any], key: str, handle: Any, raised: Exception | None = None) -> None:
    """A finished job's run id, or its whole error message (never cut) and its log path."""
    try:
        if raised is not None:
            raise raised
        s["run_id"] = handle.results()[0]  # task 0 (rank 0) of a multi-task job speaks for it
        s["state"] = "finished"
        log.print(Text.assemble(("finished ", "green"), f"{key}: {s['run_id']}"), soft_wrap=True, highlight=False)
    except Exception as err:  # the job's own exception, re-raised by submitit
        s["state"] = "failed"
        s["error"] = _error_line(err)
        s["log"] = str(getattr(handle, "paths", None) and handle.paths.stderr or "")
        log.print(Text.assemble(("failed ", "bold red"), f"{key}: {s['error']}",
                                (f" (log: {s['log']})" if s["log"] else "")), soft_wrap=True, highlight=False)


def _block(s: dict[str, Any], job: Job, teacher_state: str) -> None:
    s["state"] = "blocked (teacher failed)"
    s["error"] = (f"not started: its teacher {job.teacher.key if job.teacher else '?'} did not finish "
                  f"({teacher_state})")


def _save_status(results: str, state: dict[str, dict[str, Any]]) -> None:
    rows = [{**s, "time": datetime.now(timezone.utc).isoformat(timespec="seconds")} for s in state.values()]
    atomic_write_bytes(Path(results) / GRID_STATUS_FILE, json.dumps(rows, indent=1).encode())


def read_grid_status(results: str | Path) -> pd.DataFrame:
    """The outcome of the last grid run on this results folder (empty when none ran)."""
    path = Path(results) / GRID_STATUS_FILE
    if not path.is_file():
        return pd.DataFrame(columns=["key", "state", "run_id", "error", "log", "time"])
    return pd.DataFrame(json.loads(path.read_text()))


def _error_line(err: BaseException) -> str:
    """The job's own exception message out of submitit's report (which wraps the remote traceback), whole."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    raised = [i for i, line in enumerate(lines) if re.match(r"^[\w.]+(Error|Exception|Interrupt)\b.*:", line)]
    if not raised:
        return lines[-1] if lines else type(err).__name__
    # A message may span lines: keep everything from the last exception line to submitit's own footer.
    message = lines[raised[-1]:]
    footer = next((i for i, line in enumerate(message) if line.startswith("-----")), len(message))
    return " ".join(message[:footer])


def _certified(store: ResultsStore, run_id: str) -> bool:
    """A certification of this run has finished (some rows alone may be a certification cut short)."""
    from crt_bench.certify_run import latest_states

    states = latest_states(store)
    return bool(((states["run_id"] == run_id) & (states["status"] == "finished")).any())


def _ready(job: Job, state: dict[str, dict[str, Any]]) -> bool:
    if job.teacher is None:
        return True
    t = state.get(job.teacher.key)
    return t is None or t["state"] in ("finished", "skipped (finished)")

