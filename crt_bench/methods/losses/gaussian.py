"""The loss of ``gaussian`` (Gaussian noise training); its hyper-parameters, recipe and registration are in
:mod:`crt_bench.methods.gaussian`."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from crt_bench.methods.losses.common import gaussian_noise
from crt_bench.methods.registry import StepContext


def gaussian_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
    return F.cross_entropy(model(gaussian_noise(x, ctx.sigma)), y)
