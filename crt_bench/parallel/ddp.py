"""Wrapping a model in DistributedDataParallel."""
from __future__ import annotations

import inspect

import torch
from torch import nn

from crt_bench.core.errors import CrtBenchError
from crt_bench.parallel.env import DistEnv


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
