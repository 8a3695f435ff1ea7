"""Synthetic datasets for tests: class templates plus noise, same shapes as the real ones."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from crt_bench.data.catalog import DATASETS, SPLITS

# --------------------------------------------------------------------------------------------------
# Synthetic

SYNTHETIC_SIZES = {"train": DATASETS["synthetic"].train_images, "test": DATASETS["synthetic"].test_images}
_SYNTHETIC_TEMPLATE_SEED = 20_19_05  # fixed: train and test (and every seed) share class templates


def _synthetic_templates() -> torch.Tensor:
    """Ten fixed class templates ``[10, 3, 32, 32]`` in ``[0.05, 0.95]``.

    Template k = a base colour (each channel uniform in [0.25, 0.75]) plus the sum of three plane
    waves ``cos(2 pi (fx u + fy v) + phase)`` with 0..3 cycles per image in each direction, whose
    per-channel amplitudes form a random vector of norm 0.2. Any two templates differ by at least
    ~0.2 per pixel (RMS), i.e. by ~11 in L2 over 3072 values: far more than Gaussian noise of
    sigma=0.25 moves an image along the direction between two templates.
    """
    gen = torch.Generator().manual_seed(_SYNTHETIC_TEMPLATE_SEED)
    k, c, s = 10, 3, 32
    coords = (torch.arange(s, dtype=torch.float32) + 0.5) / s
    v, u = torch.meshgrid(coords, coords, indexing="ij")
    base = 0.25 + 0.5 * torch.rand(k, c, generator=gen)
    templates = base[:, :, None, None].expand(k, c, s, s).clone()
    for cls in range(k):
        for _ in range(3):
            fx, fy = torch.randint(0, 4, (2,), generator=gen).tolist()
            fx = 1 if fx == 0 and fy == 0 else fx
            phase = 2 * math.pi * torch.rand((), generator=gen).item()
            amp = torch.randn(c, generator=gen)
            amp = 0.2 * amp / amp.norm()
            wave = torch.cos(2 * math.pi * (fx * u + fy * v) + phase)
            templates[cls] += amp[:, None, None] * wave
    return templates.clamp_(0.05, 0.95)


def _make_synthetic(split: str, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A small learnable CIFAR-shaped dataset (``SYNTHETIC_SIZES`` images per split).

    Labels cycle 0, 1, ..., 9, 0, ... (so any prefix of the test split is class-balanced). Image =
    ``clip(template[label] + smooth + brightness + pixel, 0, 1)`` where ``smooth`` is a random
    4x4 field (std 0.12 per channel) bilinearly upsampled to 32x32, ``brightness`` a per-image
    offset (std 0.05) and ``pixel`` white noise (std 0.03). The per-image noise comes from a
    generator seeded by ``seed`` and the split, so the same (seed, split) always gives the same
    tensors and train/test differ. A tiny CNN reaches ~90% test accuracy in a few epochs, and a
    nearest-class-mean classifier stays near 100% even under Gaussian noise sigma=0.25.
    """
    n = SYNTHETIC_SIZES[split]
    gen = torch.Generator().manual_seed(1_000_003 * seed + SPLITS.index(split) + 1)
    y = torch.arange(n, dtype=torch.int64) % 10
    smooth = F.interpolate(torch.randn(n, 3, 4, 4, generator=gen) * 0.12, size=32, mode="bilinear", align_corners=False)
    brightness = torch.randn(n, 1, 1, 1, generator=gen) * 0.05
    pixel = torch.randn(n, 3, 32, 32, generator=gen) * 0.03
    x = (_synthetic_templates()[y] + smooth + brightness + pixel).clamp_(0.0, 1.0)
    return x, y
