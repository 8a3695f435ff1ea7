"""Executors of a grid: local, slurm (submitit) or inline."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crt_bench.config.choices import Executor, values
from crt_bench.core.checks import check_choice, check_count
from crt_bench.core.errors import CrtBenchError
from crt_bench.grid.gpus import GpuPoolExecutor, local_pool
from crt_bench.grid.inline import InlineExecutor
from crt_bench.grid.slurm import SlurmSubmitter, job_gpus

EXECUTORS = values(Executor)
MAX_TIMEOUTS = 10
"""Time limits a SLURM job may reach and still be requeued (submitit's default, 3, ends a run that needs a fifth
allocation): every requeued job resumes from its last checkpoint, so a run longer than the partition allows
continues over several allocations."""


def make_executor(executor: str, folder: str | Path, *, partition: str | None = None, gpus: int | None = None,
                  time_min: int = 24 * 60, cpus_per_task: int | None = None, mem: str | None = None,
                  array_parallelism: int = 16, slurm_extra: dict[str, Any] | None = None, nproc: int = 1,
                  device: str = "auto", profile: str | None = None, max_parallel: int | None = None,
                  visible: Sequence[str] | None = None) -> Any:
    """submitit's ``local`` (subprocesses), ``slurm`` (sbatch), ``debug`` (in-process), or ``inline`` (in-process,
    without submitit: :mod:`crt_bench.grid.inline`).

    ``nproc`` > 1: every job runs as that many tasks, which :class:`crt_bench.grid.task.GridTask` turns into
    the ranks of one data-parallel run (crt_bench.parallel.env); on SLURM the node's tasks (``--ntasks-per-node``).
    SLURM: ``gpus`` None asks for GPUs only where the jobs use them (:func:`crt_bench.grid.slurm.job_gpus`);
    ``slurm_extra`` goes to sbatch as ``--KEY=VALUE`` (account, qos, constraint, ...); a refused submission is
    one CrtBenchError line (:class:`crt_bench.grid.slurm.SlurmSubmitter`).

    ``local`` on a machine with GPUs (``visible``: default the parent's, :func:`crt_bench.grid.gpus.visible_gpus`)
    and ``device`` not ``cpu``: a :class:`~crt_bench.grid.gpus.GpuPoolExecutor` (:func:`~crt_bench.grid.gpus.local_pool`), each job on ``nproc`` GPUs of
    its own, ``max_parallel`` jobs at once (default: as many as the GPUs hold, one job per GPU).
    """
    check_count("--nproc", nproc)
    check_choice("executor", executor, EXECUTORS)
    if executor in ("inline", "debug") and nproc > 1:
        raise CrtBenchError(f"the {executor} executor runs jobs in this process: --nproc needs local or slurm")
    if executor == "inline":  # no submitit needed (crt_bench.grid.inline)
        return InlineExecutor()
    submitit = import_submitit()
    if executor == "local":
        pool = local_pool(device, nproc, visible)  # before any folder is made: --nproc above the GPUs
        ex = submitit.LocalExecutor(folder=str(folder))
        ex.update_parameters(timeout_min=time_min, tasks_per_node=nproc)
        if pool is not None:
            return GpuPoolExecutor(ex, pool, nproc=nproc, max_parallel=max_parallel)
    elif executor == "debug":
        ex = submitit.DebugExecutor(folder=str(folder))
    elif executor == "slurm":
        try:
            ex = submitit.SlurmExecutor(folder=str(folder), max_num_timeout=MAX_TIMEOUTS)
        except RuntimeError as err:  # submitit checks for srun
            raise CrtBenchError(f"cannot submit to SLURM from here ({err}); `--dry-run` shows the sbatch script "
                                "that would be submitted") from None
        gpus = job_gpus(gpus, device=device, profile=profile, partition=partition, nproc=nproc)
        ex.update_parameters(**slurm_parameters(partition=partition, gpus=gpus, time_min=time_min,
                                                cpus_per_task=cpus_per_task, mem=mem, slurm_extra=slurm_extra,
                                                array_parallelism=array_parallelism),
                             ntasks_per_node=nproc)
        ex = SlurmSubmitter(ex)
    return ex


def import_submitit() -> Any:
    """submitit, imported only where a grid is submitted: reports, plots and single commands never need it."""
    try:
        import submitit
    except ImportError as err:
        raise CrtBenchError(f"grids (sweep, reproduce, chain) run jobs through submitit, which does not import "
                            f"({err}): `pip install submitit`, or use single commands (run, certify, time)") from None
    return submitit


def slurm_parameters(*, partition: str | None = None, gpus: int | None = 1, time_min: int = 24 * 60,
                     cpus_per_task: int | None = None, mem: str | None = None,
                     slurm_extra: dict[str, Any] | None = None, array_parallelism: int = 16) -> dict[str, Any]:
    """submitit's SlurmExecutor parameters; GPUs only when ``gpus`` > 0 (a CPU partition refuses any GPU ask).

    The time-limit warning (USR2: checkpoint and requeue) comes a tenth of the limit before it, at most 90 s:
    slurmctld sends it at its first check (every 30 s) within the delay plus 30 s of the end, so submitit's
    90 s before a 1-minute limit would reach the job as it starts, before it has done any work.
    """
    params: dict[str, Any] = dict(job_name="crt-bench", time=time_min, array_parallelism=array_parallelism,
                                  signal_delay_s=min(90, 6 * time_min))
    if gpus:
        params["gpus_per_node"] = gpus
    if partition:
        params["partition"] = partition
    if cpus_per_task:
        params["cpus_per_task"] = cpus_per_task
    if mem:
        params["mem"] = mem
    if slurm_extra:
        params["additional_parameters"] = dict(slurm_extra)
    return params


def sbatch_preview(folder: str | Path, **params: Any) -> str:
    """The sbatch script submitit renders for a job with these parameters; nothing is submitted.

    Uses submitit's own renderer, so it works on a machine without SLURM (for ``--dry-run``).
    """
    import_submitit()
    from submitit.slurm.slurm import _make_sbatch_string

    params = {k: v for k, v in params.items() if k != "array_parallelism"}  # array-level, not in the script
    return _make_sbatch_string(command="python -u -m submitit.core._submit <folder>", folder=str(folder), **params)
