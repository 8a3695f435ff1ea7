"""Data-parallel training across processes: torchrun's environment, DDP, and the rank's share of a batch.

``torchrun --nproc_per_node K -m crt_bench.cli run ...`` starts K copies of the command with
``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` set; :func:`setup` joins them into one process group (nccl on
CUDA, gloo on a CPU).  The design keeps a K-rank run *the same run* as a single-process one:

* every rank draws the same global batch order and augmentation (the run's seed, the single-process
  :class:`~crt_bench.data.BatchSampler`) and trains on its contiguous block of each global batch
  (:class:`RankBatches`): the union of the ranks' batches is the single-process batch, in order;
* noise: each rank keeps its rows of the global batch's draw (:mod:`crt_bench.rank_noise`);
* DDP averages the ranks' gradients of their mean losses = the gradient of the global mean loss
  (exactly so when K divides the batch; a short last batch weights ranks equally);
* batch norm stays per rank (the reference code's behaviour, statistics of B/K images) unless
  ``--sync-bn``, which makes the statistics those of the global batch (CUDA only in torch);
* the CRT teacher is a :class:`~crt_bench.train_step.FrozenTeacher` on every rank, outside DDP;
* only rank 0 writes rows, checkpoints and the model and holds the run's lock; every rank holds the
  same RNG state, so a checkpoint resumes with any world size.

:func:`torchrun_command` is what ``crt-bench run --nproc K`` executes.
"""
from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from crt_bench.data import BatchSampler
from crt_bench.errors import CrtBenchError
from crt_bench.provenance import pick_device
from crt_bench.rank_noise import RankSlice, rank_slice


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a data-parallel run (rank 0 of 1 outside torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_from(environ: Mapping[str, str] | None = None) -> DistEnv:
    """The rank, world size and local rank torchrun (or SLURM via torchrun) set."""
    environ = os.environ if environ is None else environ
    if "WORLD_SIZE" not in environ:
        return DistEnv()
    return DistEnv(int(environ.get("RANK", 0)), int(environ["WORLD_SIZE"]), int(environ.get("LOCAL_RANK", 0)))


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


def wrap_model(model: nn.Module, device: torch.device, env: DistEnv, sync_bn: bool = False) -> nn.Module:
    """``model`` in DistributedDataParallel (the parameters stay ``model``'s: optimizer and state_dict unchanged)."""
    if not env.enabled:
        if sync_bn:
            raise CrtBenchError("--sync-bn needs several processes (torchrun or --nproc); this run has one")
        return model
    if sync_bn:
        if device.type != "cuda":
            raise CrtBenchError("--sync-bn needs CUDA (torch's SyncBatchNorm has no CPU kernel); drop it on a CPU")
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # in place for the children, same parameters
    ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    return ddp(model, device_ids=ids, **no_forward_buffer_sync(ddp))


def no_forward_buffer_sync(ddp: type) -> dict[str, bool]:
    """DDP's keyword for "no buffer sync in forward" (batch-norm statistics stay per rank, as in the reference
    code): ``forward_sync_buffers`` from torch 2.13, ``broadcast_buffers`` before (deprecated since). Chosen by
    the signature, not the version. The old keyword also skips the buffers' broadcast at construction, which
    changes nothing here: every rank builds the same model from the same seed or checkpoint.
    """
    params = inspect.signature(ddp.__init__).parameters
    return {"forward_sync_buffers": False} if "forward_sync_buffers" in params else {"broadcast_buffers": False}


class RankBatches:
    """This rank's contiguous block of every global batch of ``sampler``, its noise the global draw's rows.

    Every rank iterates the same single-process sampler (same generator, same permutation and
    augmentation) and keeps ``tensor_split(batch, K)[rank]``; ``len`` and ``split`` are the global
    sampler's, so epoch bookkeeping (steps, images/s) is that of the whole run.
    """

    def __init__(self, sampler: BatchSampler, env: DistEnv) -> None:
        if sampler.batch_size < env.world_size:
            raise CrtBenchError(f"batch size {sampler.batch_size} is smaller than the {env.world_size} processes: "
                                "every rank needs images (raise --batch-size or lower --nproc)")
        self.sampler, self.env = sampler, env
        self.split = sampler.split

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        k, r = self.env.world_size, self.env.rank
        for x, y in self.sampler:
            sizes = tuple(len(part) for part in torch.arange(len(y)).tensor_split(k))
            lo = sum(sizes[:r])
            with rank_slice(RankSlice(r, sizes)):
                yield x[lo:lo + sizes[r]], y[lo:lo + sizes[r]]


def torchrun_command(nproc: int, cli_args: list[str], *, nnodes: int = 1) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node K -m crt_bench.cli ARGS`` (one node)."""
    if nproc < 1:
        raise CrtBenchError(f"--nproc must be at least 1, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nnodes={nnodes}",
            f"--nproc_per_node={nproc}", "-m", "crt_bench.cli", *cli_args]


def strip_option(args: list[str], name: str) -> list[str]:
    """``args`` without ``name VALUE`` / ``name=VALUE`` (the relaunched command must not relaunch)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out
