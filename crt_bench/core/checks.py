"""Checks of user inputs shared by every layer (noise level, ...)."""
from __future__ import annotations

import math

from crt_bench.core.errors import CrtBenchError


def check_sigma(sigma: float) -> float:
    """``sigma`` as a float, or one clear error unless it is finite and > 0.

    ``inf`` passes a plain ``sigma > 0`` and started a run that then "diverged"; ``nan`` fails every
    comparison silently.  Every command that takes a sigma calls this before any work.
    """
    value = float(sigma)
    if not (math.isfinite(value) and value > 0):
        raise CrtBenchError(f"sigma must be > 0 and finite (noise standard deviation in [0,1] pixel units), "
                            f"got {sigma}")
    return value
