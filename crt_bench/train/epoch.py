"""One training epoch, top to bottom (what crt_bench.train.trainer runs once per epoch).

    lr from the schedule -> every parameter group
    for (x, y) in the loader's batches:
        for each of the method's minibatches (MethodSpec.steps_per_batch of them):
            loss = spec.loss(model, xb, yb, ctx); backward; optimizer step
        accumulate the loss on the device (no host sync per step)
    -> the epoch's loss sum, optimizer steps and wall seconds

Everything around it (resume, checkpoint, rows, DDP, locks, compile, warm-up) is the trainer's.
:meth:`crt_bench.train.step.TrainStep.__call__` is the same inner loop for one batch (the timing probes
and the warm-up call it), so what is timed is what trains.
"""
from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from crt_bench.core.provenance import synchronize
from crt_bench.core.tf32 import tf32_mode
from crt_bench.train.step import TrainStep


@dataclass
class EpochStats:
    loss_sum: Tensor  # on the device: summed over the epoch's optimizer steps (of this process)
    steps: int  # optimizer steps
    seconds: float  # wall-clock, synchronized at both ends


def train_epoch(step: TrainStep, batches: Iterable[tuple[Tensor, Tensor]], epoch: int, lr: float) -> EpochStats:
    """Train one epoch (0-based ``epoch``) at ``lr`` over ``batches``."""
    model, optimizer, ctx = step.model, step.optimizer, step.ctx
    for group in optimizer.param_groups:  # the schedule: one lr per epoch (crt_bench.config.schedule)
        group["lr"] = lr
    ctx.epoch, ctx.step = epoch, 0
    model.train()
    loss_sum = torch.zeros((), device=step.device)
    synchronize(step.device)
    start = time.perf_counter()
    with tf32_mode(step.options.tf32):
        for x, y in batches:
            batch_loss = torch.zeros((), device=x.device)
            for xb, yb in step.minibatches(x, y):
                loss = step.loss(xb, yb)  # spec.loss(model, xb, yb, ctx), under autocast where the run uses it
                step.update(loss)  # zero_grad, backward, optimizer step
                batch_loss += loss.detach().float()
                ctx.step += 1
            loss_sum += batch_loss
    synchronize(step.device)
    return EpochStats(loss_sum=loss_sum, steps=ctx.step, seconds=time.perf_counter() - start)
