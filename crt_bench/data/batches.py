"""Batches of tensors: device-resident batches, the rank's share of them, augmentation."""
from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor

from crt_bench.core.errors import CrtBenchError
from crt_bench.data.split import Split
from crt_bench.parallel.env import DistEnv
from crt_bench.parallel.noise import RankSlice, rank_slice


class RankBatches:
    """This rank's contiguous block of every global batch of ``sampler``, its noise the global draw's rows.

    Every rank iterates the same single-process sampler (same generator, same permutation and
    augmentation) and keeps ``tensor_split(batch, K)[rank]``; ``len`` and ``split`` are the global
    sampler's, so epoch bookkeeping (steps, images/s) is that of the whole run.
    """

    def __init__(self, sampler: ResidentBatches, env: DistEnv) -> None:
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


# --------------------------------------------------------------------------------------------------
# Augmentation and batching


def _same_device(a: torch.device, b: torch.device) -> bool:
    """Whether two devices are the same one (``cuda`` and ``cuda:0`` match when 0 is current)."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    current = torch.cuda.current_device()
    return (current if a.index is None else a.index) == (current if b.index is None else b.index)


def _randint(high: int, n: int, device: torch.device, generator: torch.Generator | None) -> torch.Tensor:
    """``n`` integers in ``[0, high)`` on ``device``, drawn with ``generator`` wherever it lives.

    A generator on another device (e.g. a CPU generator for CUDA data) draws there and the result
    is copied with ``non_blocking=True``; pass a generator on the data's device to avoid the copy.
    """
    if generator is None or _same_device(generator.device, device):
        return torch.randint(high, (n,), device=device, generator=generator)
    return torch.randint(high, (n,), device=generator.device, generator=generator).to(device, non_blocking=True)


def augment_batch(
    x: torch.Tensor, *, pad: int = 4, flip: bool = True, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Random crop with zero padding ``pad`` and random horizontal flip, per image, vectorised.

    Equivalent to torchvision's ``RandomCrop(H, padding=pad)`` + ``RandomHorizontalFlip()`` applied
    to every image of ``x`` (``[B, C, H, W]``) independently: the batch is zero-padded once, each
    image gets a row/column offset in ``[0, 2*pad]`` and a coin flip, and the output is gathered
    with index grids in one advanced-indexing call. Shape is unchanged; works on any device.
    Draw order (row offsets, column offsets, flips) is fixed, so a seeded ``generator`` makes the
    result reproducible.
    """
    if x.dim() != 4:
        raise ValueError(f"augment_batch expects [B, C, H, W], got shape {tuple(x.shape)}")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    b, c, h, w = x.shape
    if b == 0 or (pad == 0 and not flip):
        return x.clone()
    device = x.device
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    rows = _randint(2 * pad + 1, b, device, generator)[:, None] + torch.arange(h, device=device)  # [B, H]
    cols = _randint(2 * pad + 1, b, device, generator)[:, None] + torch.arange(w, device=device)  # [B, W]
    if flip:
        flipped = _randint(2, b, device, generator).bool()[:, None]
        cols = torch.where(flipped, cols.flip(1), cols)
    batch = torch.arange(b, device=device)[:, None, None, None]
    chans = torch.arange(c, device=device)[None, :, None, None]
    return padded[batch, chans, rows[:, None, :, None], cols[:, None, None, :]]


class ResidentBatches:
    """Minibatches sliced from a resident :class:`Split`, on the split's device.

    Each iteration is one epoch: a fresh permutation (``shuffle=True``, drawn with ``generator``)
    or dataset order, cut into ``batch_size`` chunks; the last short chunk is dropped with
    ``drop_last``. With ``augment`` each batch goes through :func:`augment_batch` (with the same
    generator). Nothing here reads values back to the host, so on a GPU no step forces a sync;
    use a generator on the data's device to keep even the random draws there.
    """

    def __init__(
        self,
        split: Split,
        batch_size: int,
        *,
        shuffle: bool = True,
        augment: bool = False,
        drop_last: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        if batch_size < 1:
            raise CrtBenchError(f"batch size must be at least 1, got {batch_size}")
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = drop_last
        self.generator = generator

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _order(self) -> torch.Tensor | None:
        if not self.shuffle:
            return None
        n, device, gen = len(self.split), self.split.x.device, self.generator
        if gen is None or _same_device(gen.device, device):
            return torch.randperm(n, device=device, generator=gen)
        return torch.randperm(n, device=gen.device, generator=gen).to(device, non_blocking=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        x, y = self.split.x, self.split.y
        for i in range(len(self)):
            lo, hi = i * self.batch_size, min((i + 1) * self.batch_size, len(self.split))
            if order is None:
                xb, yb = x[lo:hi], y[lo:hi]
            else:
                idx = order[lo:hi]
                xb, yb = x.index_select(0, idx), y.index_select(0, idx)
            if self.augment:
                xb = augment_batch(xb, generator=self.generator)
            yield xb, yb


def epoch_batches(split: Split, batch_size: int, *, augment: bool, seed: int) -> tuple[ResidentBatches, torch.Generator]:
    """The trainer's batches of a resident split and their generator, which lives on the split's device.

    Each epoch's permutation and each batch's crops and flips are then drawn where the data is: on a
    GPU no batch copies random numbers from the host (a CPU generator for CUDA data would). On the CPU
    the stream is the seeded CPU generator's, as before. The generator's state goes into checkpoints.
    """
    generator = torch.Generator(device=split.x.device).manual_seed(seed)
    return ResidentBatches(split, batch_size, shuffle=True, augment=augment, drop_last=False,
                           generator=generator), generator
