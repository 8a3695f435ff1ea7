"""Certified accuracy at fixed radii beside ACR (Sun et al., ICML 2025: ACR depends on the sampling budget and is
inflated by easy images; they recommend certified accuracy at fixed radii and the distribution of p_A).

The verdict and the leaderboard rank on ACR; these numbers are shown beside it and do not vote.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from crt_bench.analysis.metrics import certified_accuracy
from crt_bench.analysis.seeds import common_images
from crt_bench.core.constants import TABLE_RADII

FixedRadii = tuple[tuple[float, float, float], ...]
"""(radius, CRT's certified accuracy, SmoothMix's) per radius."""


def seeded_certified_accuracy(certs: Sequence[pd.DataFrame], radii: Sequence[float] = TABLE_RADII) -> np.ndarray:
    """Certified accuracy at each of ``radii``, the mean over ``certs`` (a model's seeds) on the images every seed
    certified (one certification: over all its images); NaN at every radius when they share no image."""
    images = common_images(certs) if len(certs) > 1 else None
    values = []
    for rows in certs:
        part = rows if images is None else rows[rows["idx"].isin(images)].drop_duplicates("idx", keep="last")
        if part.empty:
            return np.full(len(radii), np.nan)
        values.append(certified_accuracy(part, radii).to_numpy())
    return np.mean(values, axis=0) if values else np.full(len(radii), np.nan)


def fixed_radii(crt: Sequence[pd.DataFrame], smoothmix: Sequence[pd.DataFrame],
                radii: Sequence[float] = TABLE_RADII) -> FixedRadii:
    """A verdict cell's certified accuracies at ``radii``, each model on the images all seeds of both certified."""
    images = common_images([*crt, *smoothmix])
    crt = [c[c["idx"].isin(images)] for c in crt]
    smoothmix = [c[c["idx"].isin(images)] for c in smoothmix]
    a, b = seeded_certified_accuracy(crt, radii), seeded_certified_accuracy(smoothmix, radii)
    return tuple((float(r), float(x), float(y)) for r, x, y in zip(radii, a, b))
