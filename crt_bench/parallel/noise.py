"""Training noise under data parallelism: each rank's share of the noise of the *global* batch.

A method draws its Gaussian noise from torch's global RNG (:func:`crt_bench.methods.common.gaussian_noise`,
:func:`crt_bench.methods.common.noise_like_replicas`).  Under DistributedDataParallel every rank
holds the same RNG state (same seed, same draws) and a contiguous block of the global batch
(:class:`crt_bench.data.batches.RankBatches`).  While a :class:`RankSlice` is active, a draw for the
rank's batch draws the noise of the whole global batch -- the same shape, memory format and generator
call as one process training on that batch -- and keeps the rank's rows.  So every image gets the
noise it would get in a single-process run, the RNG stays in step across ranks, and a run's result
does not depend on its world size (to float tolerance: DDP averages the ranks' gradients).

The price is K times the noise sampling of a rank's share (cheap next to a forward pass).  Methods
that split a loader batch into minibatches (consistency, SmoothMix, SmoothAdv, MACER's replicas
inside one minibatch are fine) draw for a minibatch; such a draw gets its own block of a ``K x``
draw: independent noise, ranks still in step, but no longer the single-process values.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class RankSlice:
    """Rank ``rank`` holds rows ``start .. start + local`` of a global batch cut into ``sizes``."""

    rank: int
    sizes: tuple[int, ...]

    @property
    def start(self) -> int:
        return sum(self.sizes[: self.rank])

    @property
    def local(self) -> int:
        return self.sizes[self.rank]

    @property
    def total(self) -> int:
        return sum(self.sizes)


_ACTIVE: ContextVar[RankSlice | None] = ContextVar("crt_bench_rank_slice", default=None)


@contextmanager
def rank_slice(part: RankSlice | None) -> Iterator[None]:
    """Within the block, noise draws for this rank's batch are its rows of the global batch's draw."""
    token = _ACTIVE.set(part)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def _format(x: Tensor) -> torch.memory_format:
    if x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def standard_normal_like(x: Tensor) -> Tensor:
    """``torch.randn_like(x, dtype=float32)``, or this rank's rows of the global batch's draw."""
    part = _ACTIVE.get()
    if part is None:
        return torch.randn_like(x, dtype=torch.float32)
    n = x.shape[0]
    total, start = (part.total, part.start) if n == part.local else (n * len(part.sizes), n * part.rank)
    noise = torch.empty((total, *x.shape[1:]), dtype=torch.float32, device=x.device, memory_format=_format(x))
    return noise.normal_()[start:start + n]


def standard_normal_replicas(x: Tensor, m: int) -> Tensor:
    """``m`` noise-major N(0, I) draws per image of ``x``, ``[m * B, ...]`` float32 contiguous (or this rank's)."""
    part = _ACTIVE.get()
    b, rest = x.shape[0], tuple(x.shape[1:])
    if part is None:
        return torch.randn((m * b, *rest), device=x.device, dtype=torch.float32)
    total, start = (part.total, part.start) if b == part.local else (b * len(part.sizes), b * part.rank)
    noise = torch.randn((m * total, *rest), device=x.device, dtype=torch.float32)
    return noise.view(m, total, *rest)[:, start:start + b].reshape(m * b, *rest)
