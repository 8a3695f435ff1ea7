"""A loaded split (images and labels) and the subset of it that is used."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from crt_bench.data.catalog import DatasetInfo

# --------------------------------------------------------------------------------------------------
# Splits


@dataclass
class Split:
    """One split of a dataset held as tensors.

    ``x``: float32 ``[N, C, H, W]`` in ``[0, 1]``; ``y``: int64 ``[N]``; ``info``: the dataset.
    """

    x: torch.Tensor
    y: torch.Tensor
    info: DatasetInfo

    def to(self, device: torch.device | str) -> Split:
        """Return a copy of the split with ``x`` and ``y`` on ``device`` (meant to be called once)."""
        return Split(self.x.to(device), self.y.to(device), self.info)

    def __len__(self) -> int:
        return int(self.y.shape[0])


def default_data_root() -> Path:
    """Where datasets are looked for / downloaded without ``--data-dir``.

    ``$CRT_BENCH_DATA`` if set, else ``~/.cache/crt-bench/data``.
    """
    env = os.environ.get("CRT_BENCH_DATA")
    return Path(env).expanduser() if env else Path("~/.cache/crt-bench/data").expanduser()


def subset_indices(n: int, *, train: bool, limit: int | None, seed: int) -> np.ndarray | None:
    """Indices to keep for ``limit`` (``None`` = keep everything)."""
    if limit is None or limit >= n:
        return None
    if not train:
        return np.arange(limit)
    gen = torch.Generator().manual_seed(seed)
    return np.sort(torch.randperm(n, generator=gen)[:limit].numpy())
