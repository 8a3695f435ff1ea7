"""95% bootstrap intervals over certified images for ACR, certified accuracy and paired differences.

The unit of resampling is the test image: a certification of n images is resampled n at a time with
replacement, ``reps`` times, from a seeded numpy generator; the interval is the percentile interval
of the resampled statistic (Efron's percentile bootstrap). Per-image values are those of
:mod:`crt_bench.analysis.metrics`: ``radius * correct`` for ACR and ``correct and radius >= r`` for certified
accuracy at r, so the point estimates equal ``metrics.acr`` and ``metrics.certified_accuracy``.

A paired difference (CRT minus SmoothMix on the same images) resamples images, not runs: both models'
values of one image move together, which removes the between-image variance that the two share.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crt_bench.analysis.metrics import certify_columns
from crt_bench.core.constants import INTERVAL_LEVEL
from crt_bench.core.errors import CrtBenchError

REPS = 2000
SEED = 0
_CHUNK_ELEMENTS = 4_000_000  # resampled values held at once (memory bound for many radii)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap interval at ``level``."""

    estimate: float
    low: float
    high: float
    level: float = INTERVAL_LEVEL

    @property
    def width(self) -> float:
        return self.high - self.low

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high

    def format(self, spec: str = ".3f") -> str:
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def bootstrap_means(values: np.ndarray, *, reps: int = REPS, seed: int = SEED) -> np.ndarray:
    """Means of ``reps`` resamples (rows drawn with replacement) of ``values`` (``[n]`` or ``[n, k]``).

    Returns ``[reps]`` or ``[reps, k]``. The same seed draws the same resamples for the same n, so
    statistics of one certification computed separately stay paired.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim not in (1, 2) or len(values) == 0:
        raise CrtBenchError(f"bootstrap needs a non-empty [n] or [n, k] array, got shape {values.shape}")
    if reps < 1:
        raise CrtBenchError(f"bootstrap repetitions must be >= 1, got {reps}")
    n = len(values)
    rng = np.random.default_rng(seed)
    width = 1 if values.ndim == 1 else values.shape[1]
    chunk = max(1, _CHUNK_ELEMENTS // (n * width))
    out = []
    for start in range(0, reps, chunk):
        idx = rng.integers(0, n, size=(min(chunk, reps - start), n))
        out.append(values[idx].mean(axis=1))
    return np.concatenate(out, axis=0)


def percentile_interval(estimate: float, resampled: np.ndarray, level: float = INTERVAL_LEVEL) -> Interval:
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return Interval(float(estimate), float(low), float(high), level)


def mean_interval(values: np.ndarray, *, reps: int = REPS, seed: int = SEED, level: float = INTERVAL_LEVEL) -> Interval:
    """Bootstrap interval of the mean of per-image ``values``."""
    values = np.asarray(values, dtype=np.float64)
    return percentile_interval(float(values.mean()), bootstrap_means(values, reps=reps, seed=seed), level)


def acr_values(rows: pd.DataFrame) -> np.ndarray:
    """Each image's contribution to ACR: its radius when correct, else 0."""
    correct, radius = certify_columns(rows)
    return np.where(correct, radius, 0.0)


def acr_interval(rows: pd.DataFrame, *, reps: int = REPS, seed: int = SEED, level: float = INTERVAL_LEVEL) -> Interval:
    """ACR with its bootstrap interval over the certified images."""
    return mean_interval(acr_values(rows), reps=reps, seed=seed, level=level)


def certified_accuracy_intervals(rows: pd.DataFrame, radii: Sequence[float], *, reps: int = REPS, seed: int = SEED,
                                 level: float = INTERVAL_LEVEL) -> pd.DataFrame:
    """Certified accuracy at each radius with its interval: columns ``radius, estimate, low, high``."""
    correct, radius = certify_columns(rows)
    hits = np.stack([correct & (radius >= r) for r in radii], axis=1).astype(np.float64)
    resampled = bootstrap_means(hits, reps=reps, seed=seed)
    out = [percentile_interval(float(hits[:, j].mean()), resampled[:, j], level) for j in range(len(radii))]
    return pd.DataFrame({"radius": [float(r) for r in radii], "estimate": [i.estimate for i in out],
                         "low": [i.low for i in out], "high": [i.high for i in out]})


def paired_acr_difference(a: pd.DataFrame, b: pd.DataFrame, *, reps: int = REPS, seed: int = SEED,
                          level: float = INTERVAL_LEVEL) -> Interval:
    """ACR(a) - ACR(b) over the images both certified (matched by ``idx``), resampling images.

    Raises when the two certifications share no image.
    """
    for name, frame in (("first", a), ("second", b)):
        if "idx" not in frame.columns:
            raise CrtBenchError(f"the {name} certification has no idx column: images cannot be paired")
    left = pd.DataFrame({"idx": a["idx"].to_numpy(), "va": acr_values(a)}).drop_duplicates("idx")
    right = pd.DataFrame({"idx": b["idx"].to_numpy(), "vb": acr_values(b)}).drop_duplicates("idx")
    both = left.merge(right, on="idx")
    if both.empty:
        raise CrtBenchError("the two certifications share no image: no paired difference")
    return mean_interval((both["va"] - both["vb"]).to_numpy(), reps=reps, seed=seed, level=level)


def paired_images(a: pd.DataFrame, b: pd.DataFrame) -> int:
    """How many images two certifications have in common."""
    return len(set(a["idx"]) & set(b["idx"])) if "idx" in a and "idx" in b else 0


__all__ = ["Interval", "REPS", "acr_interval", "acr_values", "bootstrap_means",
           "certified_accuracy_intervals", "mean_interval", "paired_acr_difference", "paired_images",
           "percentile_interval"]
