"""Writes rows.csv: the certify rows of a fixed model, made by crt-bench at f23f402 (before the counts columns).

Run from an export of that commit (``git archive f23f402 crt_bench | tar -x -C OLD``):
``PYTHONPATH=OLD python tests/data/certify_golden/make_golden.py``.  tests/test_certify_counts.py certifies
the same model with today's code and compares every one of these columns (but ``seconds``) exactly.
"""
from pathlib import Path

import torch

from crt_bench.certify.driver import certify_dataset


def fixed_model_and_data() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A linear 3-class model on 1x4x4 images, weights and images from a fixed generator."""
    g = torch.Generator().manual_seed(2026)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    with torch.no_grad():
        w = torch.randn(3, 16, generator=g)
        model[1].weight.copy_((w - w.mean(dim=1, keepdim=True)) * 1.5)  # a flat image scores 0 for every class
        model[1].bias.copy_(torch.randn(3, generator=g) * 0.1)
    x = torch.rand(24, 1, 4, 4, generator=g)
    y = torch.randint(0, 3, (24,), generator=g)
    return model, x, y


def golden_rows():
    model, x, y = fixed_model_and_data()
    return certify_dataset(model, x, y, sigma=0.5, num_classes=3, n0=20, n=400, alpha=0.01, batch_size=64,
                           indices=list(range(24)), seed=5, progress=False)


if __name__ == "__main__":
    golden_rows().to_csv(Path(__file__).with_name("rows.csv"), index=False)
