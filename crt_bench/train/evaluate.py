"""Accuracy of the base classifier under Gaussian noise (the per-epoch evaluation)."""
from __future__ import annotations

import torch
from torch import nn

from crt_bench.data.split import Split

EVAL_IMAGES = 2000  # noisy test accuracy per epoch is measured on at most this many test images


@torch.no_grad()
def noisy_accuracy(model: nn.Module, split: Split, sigma: float, batch_size: int = 500) -> float:
    """Accuracy of the base classifier on one noisy draw of (at most EVAL_IMAGES) test images."""
    model.eval()
    n = min(len(split), EVAL_IMAGES)
    correct = torch.zeros((), dtype=torch.long, device=split.x.device)
    for i in range(0, n, batch_size):
        x, y = split.x[i:i + batch_size], split.y[i:i + batch_size]
        noisy = x + torch.randn_like(x) * sigma
        correct += (model(noisy).argmax(1) == y).sum()
    return correct.item() / max(n, 1)
