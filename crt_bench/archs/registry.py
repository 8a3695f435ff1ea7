"""Architecture registry: one decorator per architecture, as timm does with ``register_model``.

Every entry knows where it comes from (in-project or timm), which family and generation (release
year) it belongs to, and builds a base classifier for a given number of classes and input channels.
``build_model`` wraps it as ``Sequential(NormalizeLayer, net)``: inputs stay in [0, 1] pixel space so
that Gaussian noise is added before normalization, as in the randomized-smoothing reference code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from crt_bench.errors import CrtBenchError


@dataclass(frozen=True)
class ArchSpec:
    name: str
    constructor: Callable[..., nn.Module]  # (num_classes=..., in_chans=...) -> nn.Module
    family: str
    generation: int  # release year of the architecture family
    source: str  # "in-project" or "timm:<model name>"
    input_size: int = 32  # the square input size the adaptation is built for
    description: str = ""
    aliases: tuple[str, ...] = ()


_ARCHS: dict[str, ArchSpec] = {}
_ALIASES: dict[str, str] = {}


def register_arch(
    name: str,
    *,
    family: str,
    generation: int,
    source: str,
    input_size: int = 32,
    description: str = "",
    aliases: Sequence[str] = (),
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register ``fn(num_classes, in_chans) -> nn.Module`` under ``name`` (and its aliases)."""

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _ARCHS or name in _ALIASES:
            raise ValueError(f"architecture {name!r} is registered twice")
        _ARCHS[name] = ArchSpec(name, fn, family, generation, source, input_size, description, tuple(aliases))
        for alias in aliases:
            _ALIASES[alias] = name
        return fn

    return decorator


def list_archs() -> list[ArchSpec]:
    """All registered architectures, oldest generation first."""
    return sorted(_ARCHS.values(), key=lambda s: (s.generation, s.name))


def get_arch(name: str) -> ArchSpec:
    key = _ALIASES.get(name, name)
    if key not in _ARCHS:
        valid = ", ".join(s.name for s in list_archs())
        raise CrtBenchError(f"unknown architecture {name!r}; valid names: {valid}")
    return _ARCHS[key]


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
    net = spec.constructor(num_classes=num_classes, in_chans=in_chans)
    return nn.Sequential(NormalizeLayer(mean, std), net)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
