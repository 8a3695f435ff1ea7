"""What a grid submits to submitit: the one module of crt-bench that imports submitit at the top.

It is imported only where a grid job or a certification's shard array is submitted or executed
(:func:`crt_bench.grid.runner.run_grid`, :func:`crt_bench.grid.certify_array.certify_on_slurm`, and submitit's
worker unpickling the task), so the report, ``crt-bench plot``, single runs and the test
suite's collection work on a machine without submitit.
"""
from __future__ import annotations

import os

import submitit

from crt_bench.certify.resumable import certify_run
from crt_bench.certify.shards import ShardSpec
from crt_bench.config.certify import CertifyConfig
from crt_bench.core.logs import setup_logging, verbosity
from crt_bench.core.signals import stop_on_signals
from crt_bench.grid import execute
from crt_bench.grid.jobs import Job
from crt_bench.parallel.env import setup
from crt_bench.store.store import ResultsStore


class GridTask(submitit.helpers.Checkpointable):
    """What a grid submits: :func:`execute_job`, plus submitit's checkpoint/requeue protocol.

    When SLURM's time limit nears or a node is preempted, submitit signals the job (USR2), calls
    :meth:`checkpoint` (inherited: resubmit the same call) and requeues it. Nothing else needs saving:
    the run's last epoch checkpoint and the certification's appended rows are on disk, and
    :func:`execute_job` resumes both by the job's key, so the requeued job continues where it stopped.
    Under the local executor SIGTERM (what :class:`crt_bench.grid.watch.JobWatch` sends when the grid is
    stopped) marks the run interrupted and ends the job; on SLURM submitit keeps SIGTERM for itself.
    """

    def __init__(self) -> None:
        self.verbosity = verbosity()  # the grid's -v/-q, for the job's own process

    def __call__(self, job: Job, results: str) -> str:
        setup_logging(self.verbosity)  # a job's process logs as the grid does (its lines reach the grid's console)
        if submitit.JobEnvironment().num_tasks > 1:  # --nproc: submitit's tasks become torch.distributed ranks
            # CUDA_VISIBLE_DEVICES is the job's own GPUs (crt_bench.grid.gpus): rank k uses the k-th of them
            submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)

            setup(job.device)  # join the process group now: rank 0's train/resume decision is broadcast
        if os.environ.get("SUBMITIT_EXECUTOR") == "local":
            with stop_on_signals(f"job {job.key} stopped; re-run the grid to continue it"):
                return execute.execute_job(job, results)
        return execute.execute_job(job, results)  # looked up at call time (tests replace it)


class CertifyShard(submitit.helpers.Checkpointable):
    """A task of a sharded certification's SLURM array (:mod:`crt_bench.grid.certify_array`): one shard.

    Requeued on a time limit or preemption like :class:`GridTask`: the shard's certified rows are on disk
    and :func:`~crt_bench.certify.resumable.certify_run` continues with the images it lacks.
    """

    def __init__(self) -> None:
        self.verbosity = verbosity()

    def __call__(self, run_id: str, results: str, ccfg: CertifyConfig, shard: ShardSpec, options: dict) -> str:
        setup_logging(self.verbosity)
        cert_id, _ = certify_run(run_id, ResultsStore(results), ccfg, shard=shard, progress=False, **options)
        return cert_id
