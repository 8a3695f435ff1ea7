"""Data-parallel training across processes: torchrun's environment, DDP, and the rank's share of a batch.

``torchrun --nproc_per_node K -m crt_bench.cli run ...`` starts K copies of the command with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; :func:`setup` joins them into one process group (nccl on
CUDA, gloo on a CPU).  The design keeps a K-rank run *the same run* as a single-process one:

* every rank draws the same global batch order and augmentation (the run's seed, the single-process
  :class:`~crt_bench.data.batches.ResidentBatches`) and trains on its contiguous block of each global batch
  (:class:`RankBatches`): the union of the ranks' batches is the single-process batch, in order;
* noise: each rank keeps its rows of the global batch's draw (:mod:`crt_bench.parallel.noise`);
* DDP averages the ranks' gradients of their mean losses = the gradient of the global mean loss
  (exactly so when K divides the batch; a short last batch weights ranks equally);
* batch norm stays per rank (the reference code's behaviour, statistics of B/K images) unless
  ``--sync-bn``, which makes the statistics those of the global batch (CUDA only in torch);
* the CRT teacher is a :class:`~crt_bench.train.teacher.FrozenTeacher` on every rank, outside DDP;
* only rank 0 writes rows, checkpoints and the model and holds the run's lock; every rank holds the
  same RNG state, so a checkpoint resumes with any world size.

:func:`torchrun_command` is what ``crt-bench run --nproc K`` executes.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from crt_bench.core.provenance import pick_device


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a data-parallel run or a sharded certification (rank 0 of 1 outside torchrun).

    ``launched``: a launcher (torchrun, or SLURM through it) set ``WORLD_SIZE``, even to 1.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from(environ: Mapping[str, str] | None = None) -> DistEnv:
    """The rank, world size and local rank torchrun (or SLURM via torchrun) set: the one reader of them."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return DistEnv()
    return DistEnv(int(environ.get("RANK", 0)), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", 0)),
                   launched=True)


def rank_device(setting: str, env: DistEnv) -> torch.device:
    """``auto``/``cuda`` under torchrun means this rank's GPU (``cuda:LOCAL_RANK``)."""
    device = pick_device(setting)
    if env.enabled and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", env.local_rank % torch.cuda.device_count())
    return device


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def setup(device_setting: str) -> tuple[DistEnv, torch.device]:
    """Join torchrun's process group (once per process); returns this rank's place and device."""
    env = env_from()
    device = rank_device(device_setting, env)
    if env.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend_for(device), rank=env.rank, world_size=env.world_size)
    return env, device


def broadcast_object(obj: Any, env: DistEnv) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the new run's id, which holds a timestamp and a random tag)."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_reduce_mean(value: Tensor, env: DistEnv) -> Tensor:
    """The mean over ranks of a tensor (a copy; the input is unchanged)."""
    if not env.enabled:
        return value
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / env.world_size


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def barrier_if_distributed(env: DistEnv | None = None) -> bool:
    """Under torchrun: wait for every rank (gloo, CPU-only barrier); True when this process is rank 0."""
    env = env_from() if env is None else env
    if not env.enabled:
        return True
    created = not dist.is_initialized()
    if created:
        dist.init_process_group("gloo")
    try:
        dist.barrier()
        return env.is_main
    finally:
        if created:
            dist.destroy_process_group()
