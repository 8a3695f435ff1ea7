"""Certified accuracy and average certified radius (ACR) from per-image CERTIFY rows.

Both metrics are averages over **all** certified images; an abstention (``predict == -1``, radius 0)
or a wrong prediction contributes 0:

* certified accuracy at radius r = mean over rows of ``[correct == 1 and radius >= r]``
  (Cohen et al., ``analyze.py: ApproximateAccuracy``); at r = 0 this is the smoothed classifier's
  clean accuracy, abstentions counted as errors.
* ACR = mean over rows of ``radius * correct`` (introduced by MACER, Zhai et al. 2020).

``rows`` is any frame with integer ``correct`` (0/1) and float ``radius`` columns: the output of
:func:`crt_bench.certify.driver.certify_dataset` or of :func:`crt_bench.store.cohen_log.read_cohen_log`.  Published
logs round radii to 3 significant digits, so a radius of 0.2496 is logged as 0.25 and counts at
r = 0.25; the comparison here is always ``>=`` on whatever values the frame holds.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from crt_bench.core.constants import SUMMARY_RADII
from crt_bench.core.errors import CrtBenchError

def certified_accuracy(rows: pd.DataFrame, radii: Sequence[float]) -> pd.Series:
    """Fraction of all rows that are correct with certified radius ``>= r``, for each ``r``.

    Returns a float Series indexed by the radii (index name ``"radius"``).
    """
    correct, radius = certify_columns(rows)
    values = [float(np.mean(correct & (radius >= r))) for r in radii]
    index = pd.Index([float(r) for r in radii], name="radius", dtype=np.float64)
    return pd.Series(values, index=index, name="certified_accuracy", dtype=np.float64)


def acr(rows: pd.DataFrame) -> float:
    """Average certified radius: mean over all rows of ``radius * correct`` (wrong/abstain -> 0)."""
    correct, radius = certify_columns(rows)
    return float(np.mean(np.where(correct, radius, 0.0)))


def summary_row(rows: pd.DataFrame, radii: Sequence[float] = SUMMARY_RADII) -> dict[str, float | int]:
    """One summary-table row: ``{"n_images": N, "acc@0.00": ..., "acc@0.25": ..., ..., "acr": ...}``.

    Key names are stable: ``n_images`` (int), then ``acc@{r:.2f}`` for each radius in the given
    order (certified accuracy as a fraction in [0, 1]), then ``acr``.
    """
    accuracy = certified_accuracy(rows, radii)
    summary: dict[str, float | int] = {"n_images": len(rows)}
    summary.update({f"acc@{r:.2f}": value for r, value in accuracy.items()})
    summary["acr"] = acr(rows)
    return summary


def certify_columns(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``correct`` as a boolean array and ``radius`` as float64, after checking they exist."""
    missing = [name for name in ("correct", "radius") if name not in rows.columns]
    if missing:
        raise CrtBenchError(f"certification rows lack column(s) {missing}; got {list(rows.columns)}")
    if len(rows) == 0:
        raise CrtBenchError("no certification rows: metrics are undefined for zero images")
    correct = rows["correct"].to_numpy() == 1
    radius = rows["radius"].to_numpy(dtype=np.float64)
    return correct, radius


__all__ = ["acr", "certified_accuracy", "summary_row"]
