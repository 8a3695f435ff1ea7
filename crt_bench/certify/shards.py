"""Sharded certification: one certification's images split across processes, merged by construction.

Every image's noise is keyed by (seed, image index) (:mod:`crt_bench.certify.stream`), so an image's
row does not depend on which process certifies it or on what else that process certifies.  A shard
is therefore just a strided slice of the image list (``indices[i::K]``: every shard gets a similar mix
of the subset) certified under the *same* :class:`~crt_bench.certify.resumable.CertKey`; its rows land in the
certify table under the same ``cert_id``, and the union of the shards is the unsharded certification.

Three ways to run the shards:

* ``crt-bench certify RUN --shards K``: :func:`launch_local` starts K child processes on this machine
  (one GPU each, round-robin, when there are GPUs), waits for them, and then the parent's own
  unsharded pass finds every image done and records the certification as finished;
* ``crt-bench certify RUN --shards K --shard I`` (a SLURM array task: ``--shard $SLURM_ARRAY_TASK_ID``):
  one shard; any later unsharded ``crt-bench certify RUN`` (same options) completes and closes it;
* under ``torchrun``: :func:`shard_from_env` takes I and K from ``RANK``/``WORLD_SIZE``; the ranks
  meet at a barrier and rank 0 closes the certification.

Each shard holds its own lock (a second driver of the same shard is refused); shards of one
certification run side by side.
"""
from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch

from crt_bench.core.errors import CrtBenchError
from crt_bench.parallel.env import DistEnv, env_from


@dataclass(frozen=True)
class ShardSpec:
    """Shard ``index`` of ``count``: the images at positions ``index, index + count, ...`` of the subset."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise CrtBenchError(f"--shard must be in 0..{self.count - 1} for --shards {self.count}, got {self.index}")

    def select(self, indices: list[int]) -> list[int]:
        return list(indices[self.index::self.count])

    def lock_name(self, base: str) -> str:
        """The shard's own lock file next to the certification's (``certify-ab12.lock`` -> ``...shard1of4.lock``)."""
        stem = base.removesuffix(".lock")
        return f"{stem}.shard{self.index}of{self.count}.lock"

    @property
    def label(self) -> str:
        return f"{self.index}/{self.count}"


def shard_from_env(env: DistEnv | None = None) -> ShardSpec | None:
    """The shard torchrun (or any launcher setting ``RANK``/``WORLD_SIZE``) gives this process, if any."""
    env = env_from() if env is None else env
    return ShardSpec(env.rank, env.world_size) if env.launched else None


def launch_local(cli_args: list[str], count: int, *, gpus: int | None = None) -> None:
    """Run ``crt-bench certify <cli_args> --shards count --shard i`` for every i, concurrently, and wait.

    Each child sees one GPU (``CUDA_VISIBLE_DEVICES``, round-robin) when there are any, and one
    thread per core share of the CPU otherwise.  A failed shard fails the whole launch (after the
    others finish, so their rows are kept and a rerun only does what is missing).
    """
    gpus = torch.cuda.device_count() if gpus is None else gpus
    children = []
    for i in range(count):
        env = dict(os.environ)
        env.pop("RANK", None), env.pop("WORLD_SIZE", None)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        else:
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // count)))
        cmd = [sys.executable, "-m", "crt_bench.cli", "certify", *cli_args, "--shards", str(count), "--shard", str(i)]
        children.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL))
    try:
        codes = [child.wait() for child in children]
    except BaseException:
        for child in children:
            child.terminate()
        for child in children:
            child.wait()
        raise
    failed = [i for i, code in enumerate(codes) if code != 0]
    if failed:
        raise CrtBenchError(f"certification shard(s) {failed} of {count} failed (exit codes "
                            f"{[codes[i] for i in failed]}); run the same command again to finish the missing images")
