"""A run's checkpoint: what a resume continues from (weights, optimizer, random states, the epoch's row).

Written atomically after every epoch, before that epoch's row (which it carries: see
crt_bench.train.trainer on exactly-once rows).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crt_bench.core.atomic import atomic_torch_save
from crt_bench.core.errors import CrtBenchError
from crt_bench.data.catalog import DatasetInfo
from crt_bench.models.files import model_metadata, read_torch_file


@dataclass
class RunState:
    """How far a run got; what its checkpoint keeps besides the weights."""

    epoch: int = 0
    train_seconds: float = 0.0  # wall-clock
    started: str = ""
    device_seconds: float = 0.0  # wall-clock x processes (GPU-seconds on GPUs), summed over resumes of any size

    def add_epoch(self, seconds: float, world_size: int) -> None:
        self.epoch += 1
        self.train_seconds += seconds
        self.device_seconds += seconds * world_size


def save_checkpoint(path: Path, *, arch: str, info: DatasetInfo, sigma: float, method: str, run_id: str,
                    model: nn.Module, optimizer: torch.optim.Optimizer, sampler_gen: torch.Generator,
                    state: RunState, epoch_row: dict[str, Any], device: torch.device) -> None:
    obj = model_metadata(arch, info, sigma=sigma, method=method, run_id=run_id, model=model)
    obj.update(state_dict=model.state_dict(), optimizer=optimizer.state_dict(), epoch=state.epoch,
               train_seconds=state.train_seconds, started=state.started, epoch_row=json.dumps(epoch_row),
               device_seconds=state.device_seconds,
               rng={"torch": torch.get_rng_state(), "sampler": sampler_gen.get_state(),
                    **({"cuda": torch.cuda.get_rng_state(device)} if device.type == "cuda" else {})})
    atomic_torch_save(obj, path)


def restore_checkpoint(path: Path, run_id: str, model: nn.Module, optimizer: torch.optim.Optimizer,
                       sampler_gen: torch.Generator, device: torch.device) -> tuple[RunState, dict[str, Any]]:
    """Put the weights, optimizer and random states of ``path`` back; returns the state and the checkpoint."""
    obj = read_torch_file(path)
    model.load_state_dict(obj["state_dict"])
    optimizer.load_state_dict(obj["optimizer"])
    torch.set_rng_state(obj["rng"]["torch"])
    try:
        sampler_gen.set_state(obj["rng"]["sampler"])
    except RuntimeError:  # a CPU generator's state, from before batches were drawn on the device
        raise CrtBenchError(f"run {run_id}: its checkpoint holds a batch-sampler state of another device "
                            f"than {sampler_gen.device} (written by an earlier crt-bench, which drew batches on "
                            "the CPU): resume it with that version, or start the run again") from None
    if "cuda" in obj["rng"] and device.type == "cuda":
        torch.cuda.set_rng_state(obj["rng"]["cuda"], device)
    state = RunState(epoch=int(obj["epoch"]), train_seconds=float(obj["train_seconds"]), started=obj["started"],
                     device_seconds=float(obj.get("device_seconds", obj["train_seconds"])))
    return state, obj
