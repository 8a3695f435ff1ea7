"""ACR intervals that cover seed-to-seed variation as well as images, for models trained with several seeds.

The seeds of a model are certified on the same test images, so seeds and images are *crossed*, not nested.
Each bootstrap replicate draws every model's seeds with replacement (independently per model: its runs are
independent trainings) and, once for all models, the images with replacement (the same image resample for
every seed of both models, so a difference stays paired over images). The statistic is the mean over the
drawn seeds of the mean over the drawn images; its point estimate is the mean over seeds of each seed's ACR
on the images every seed certified. This is the pigeonhole bootstrap for crossed designs (Owen, 2007), which
errs on the wide side for the image part. The seed part knows the seed-to-seed variance only as well as the
k seeds tell it: with 2 or 3 seeds it is itself uncertain and the interval can be too narrow.

With one seed per model the intervals are the image bootstrap of :mod:`crt_bench.analysis.uncertainty`.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from crt_bench.analysis.uncertainty import (
    REPS,
    SEED,
    Interval,
    acr_interval,
    acr_values,
    paired_acr_difference,
    percentile_interval,
)
from crt_bench.core.constants import INTERVAL_LEVEL
from crt_bench.core.errors import CrtBenchError

_CHUNK_ELEMENTS = 4_000_000  # image weights held at once


def common_images(certs: Sequence[pd.DataFrame]) -> list[int]:
    """The image indices (``idx``) every certification has, sorted."""
    sets = [set(c["idx"].tolist()) if "idx" in c else set() for c in certs]
    return sorted(set.intersection(*sets)) if sets else []


def acr_matrix(certs: Sequence[pd.DataFrame], images: Sequence[int]) -> np.ndarray:
    """``[seeds, images]``: each seed's per-image ACR value on ``images`` (in that order)."""
    out = []
    for rows in certs:
        values = pd.Series(acr_values(rows), index=rows["idx"].to_numpy())
        out.append(values[~values.index.duplicated()].reindex(list(images)).to_numpy(dtype=np.float64))
    return np.stack(out)


def crossed_bootstrap(matrices: Sequence[np.ndarray], signs: Sequence[float], *, reps: int = REPS,
                      seed: int = SEED) -> np.ndarray:
    """``reps`` resampled values of ``sum_m sign_m * mean over seeds, images of matrices[m]`` (see module doc)."""
    n = matrices[0].shape[1]
    if n == 0 or any(m.ndim != 2 or m.shape[1] != n or m.shape[0] == 0 for m in matrices):
        raise CrtBenchError("the seed bootstrap needs non-empty [seeds, images] matrices over the same images")
    rng = np.random.default_rng(seed)
    out = []
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, reps, chunk):
        r = min(chunk, reps - start)
        image_w = rng.multinomial(n, np.full(n, 1.0 / n), size=r) / n  # [r, n]
        total = np.zeros(r)
        for m, sign in zip(matrices, signs):
            k = m.shape[0]
            seed_w = rng.multinomial(k, np.full(k, 1.0 / k), size=r) / k  # [r, k]
            total += sign * ((seed_w @ m) * image_w).sum(axis=1)
        out.append(total)
    return np.concatenate(out)


def seed_acrs(certs: Sequence[pd.DataFrame]) -> tuple[float, ...]:
    """Each seed's ACR over all the images it certified (the table's per-seed column)."""
    return tuple(float(acr_values(c).mean()) for c in certs)


def seeded_acr_interval(certs: Sequence[pd.DataFrame], *, reps: int = REPS, seed: int = SEED,
                        level: float = INTERVAL_LEVEL) -> Interval:
    """ACR of a model trained with ``len(certs)`` seeds; one seed: the image bootstrap over all its images."""
    if len(certs) == 1:
        return acr_interval(certs[0], reps=reps, seed=seed, level=level)
    images = common_images(certs)
    if not images:
        raise CrtBenchError(f"the {len(certs)} seeds' certifications share no image: no seed-aware interval")
    m = acr_matrix(certs, images)
    return percentile_interval(float(m.mean()), crossed_bootstrap([m], [1.0], reps=reps, seed=seed), level)


def seeded_acr_difference(a: Sequence[pd.DataFrame], b: Sequence[pd.DataFrame], *, reps: int = REPS,
                          seed: int = SEED, level: float = INTERVAL_LEVEL) -> tuple[Interval, int]:
    """Mean-over-seeds ACR(a) - ACR(b) on the images every seed of both certified, and that image count.

    One seed each: the paired image bootstrap (:func:`~crt_bench.analysis.uncertainty.paired_acr_difference`).
    """
    images = common_images([*a, *b])
    if not images:
        raise CrtBenchError("the certifications share no image: no paired difference")
    if len(a) == 1 and len(b) == 1:
        return paired_acr_difference(a[0], b[0], reps=reps, seed=seed, level=level), len(images)
    ma, mb = acr_matrix(a, images), acr_matrix(b, images)
    resampled = crossed_bootstrap([ma, mb], [1.0, -1.0], reps=reps, seed=seed)
    return percentile_interval(float(ma.mean() - mb.mean()), resampled, level), len(images)


__all__ = ["acr_matrix", "common_images", "crossed_bootstrap", "seed_acrs", "seeded_acr_difference",
           "seeded_acr_interval"]
