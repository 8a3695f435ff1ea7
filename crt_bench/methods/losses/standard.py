"""The loss of ``standard`` (noise-free training); its registration is in :mod:`crt_bench.methods.standard`."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from crt_bench.methods.registry import StepContext


def standard_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
    return F.cross_entropy(model(x), y)
