"""A sharded certification as one SLURM array job: task I certifies shard I of K (:mod:`crt_bench.certify.shards`).

``crt-bench certify RUN --shards K --executor slurm`` submits the K shards with one ``sbatch --array``; every task
writes its images' rows into the one store at once, under the certification's single cert id, each holding its
shard's own lock. This process follows their output and waits for all of them; then the command's unsharded
pass finds every image done and records the certification as finished (and compacts its parts), as after
``--shards K`` on one machine. A task that reaches its time limit is requeued and continues where it stopped
(:class:`~crt_bench.grid.task.CertifyShard`). submitit is imported only when the array is submitted.
"""
from __future__ import annotations

import signal
import time
from importlib import import_module
from typing import Any

from crt_bench.certify.shards import ShardSpec
from crt_bench.config.certify import CertifyConfig
from crt_bench.core.console import stderr_console
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.signals import stop_signals
from crt_bench.grid.runner import _error_line as error_line
from crt_bench.grid.slurm import ended_without_result
from crt_bench.grid.watch import JobWatch


def certify_on_slurm(run_id: str, results: str, ccfg: CertifyConfig, count: int, executor: Any, *,
                     options: dict[str, Any], poll_s: float = 1.0) -> list[str]:
    """Certify ``run_id``'s images as ``count`` shards, one SLURM array task each; returns the array's job ids.

    ``executor``: a SLURM executor (:func:`crt_bench.grid.executors.make_executor`); ``options``: the keyword
    arguments of :func:`~crt_bench.certify.resumable.certify_run` besides the shard (sigma, seed, device, ...).
    A shard that fails, or that the scheduler ends without a result (scancel, node failure), fails the call
    once every shard has ended (one :class:`CrtBenchError` naming each with its reason and log); the others'
    rows are kept, so the same command again certifies only what is missing. Ctrl-C or SIGTERM cancels them.
    """
    shards = [ShardSpec(i, count) for i in range(count)]
    task = import_module("crt_bench.grid.task").CertifyShard()
    handles = executor.map_array(task, [run_id] * count, [str(results)] * count, [ccfg] * count, shards,
                                 [options] * count)
    running = {shard.label: handle for shard, handle in zip(shards, handles)}
    watch = JobWatch(stderr_console())
    for key, handle in running.items():
        watch.add(key, handle, label=f"shard {key}")
    failed: dict[str, str] = {}
    try:
        with stop_signals((signal.SIGTERM,)):
            while running:
                watch.pump()
                ended = ended_without_result(running)  # cancelled: without sacct submitit would wait forever
                for key, handle in list(running.items()):
                    if key in ended:
                        failed[key] = ended[key]
                    elif not handle.done():
                        continue
                    else:
                        try:
                            handle.result()
                        except Exception as err:  # the shard's own exception, re-raised by submitit
                            failed[key] = f"{error_line(err)} (log: {handle.paths.stderr})"
                    del running[key]
                    watch.remove(key)
                if running:
                    time.sleep(poll_s)
    except KeyboardInterrupt:
        watch.stop_all()
        raise
    if failed:
        said = "; ".join(f"shard {key}: {why}" for key, why in sorted(failed.items()))
        raise CrtBenchError(f"{len(failed)} of {count} certification shards failed ({said}); the other shards' rows "
                            "are kept: run the same command again to certify the missing images")
    return [str(h.job_id) for h in handles]
