"""From an architecture name to a model: the normalisation layer in front, parameter counts."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from crt_bench.core.errors import CrtBenchError
from crt_bench.models.registry import get_arch


class NormalizeLayer(nn.Module):
    """(x - mean) / std per channel; the first layer of every base classifier."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def build_model(
    name: str, *, num_classes: int, in_chans: int, mean: Sequence[float], std: Sequence[float]
) -> nn.Sequential:
    """``Sequential(NormalizeLayer(mean, std), net)``: the layout of the reference checkpoints."""
    if len(mean) != in_chans or len(std) != in_chans:
        raise CrtBenchError(f"mean/std have {len(mean)}/{len(std)} channels but the data has {in_chans}")
    spec = get_arch(name)
    net = spec.builder(num_classes=num_classes, in_chans=in_chans)
    return nn.Sequential(NormalizeLayer(mean, std), net)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
