"""Accuracy of the base classifier under Gaussian noise (the per-epoch evaluation)."""
from __future__ import annotations

import torch
from torch import nn

from crt_bench.data.split import Split

EVAL_IMAGES = 2000  # noisy test accuracy per epoch is measured on at most this many test images


@torch.no_grad()
def noisy_correct(model: nn.Module, split: Split, sigma: float, batch_size: int = 500) -> torch.Tensor:
    """Per-image correctness (bool, on the CPU) of the base classifier on one noisy draw of the first (at most
    EVAL_IMAGES) test images: its mean is the epoch's noisy test accuracy, the images are the same every epoch
    and every run, so evaluations pair over images."""
    model.eval()
    n = min(len(split), EVAL_IMAGES)
    out = []
    for i in range(0, n, batch_size):
        x, y = split.x[i:min(i + batch_size, n)], split.y[i:min(i + batch_size, n)]
        noisy = x + torch.randn_like(x) * sigma
        out.append(model(noisy).argmax(1) == y)
    return torch.cat(out).cpu() if out else torch.zeros(0, dtype=torch.bool)
