"""Checks of user inputs shared by every layer: noise level, alpha, counts, positive numbers, names, choices.

Each returns the checked value or raises one clear :class:`~crt_bench.core.errors.CrtBenchError`; the CLI
and the library call the same function, so a bad value reads the same wherever it is caught.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

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


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """A failure probability / significance level: a float strictly between 0 and 1."""
    value = float(alpha)
    if not 0.0 < value < 1.0:
        raise CrtBenchError(f"{name} must lie in (0, 1), got {alpha}")
    return value


def check_count(name: str, value: int, *, minimum: int = 1) -> int:
    """A whole number of things (images, samples, processes, epochs, ...) that is at least ``minimum``."""
    if isinstance(value, bool) or int(value) != value:
        raise CrtBenchError(f"{name} must be a whole number >= {minimum}, got {value}")
    if value < minimum:
        raise CrtBenchError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_positive(name: str, value: float) -> float:
    """A finite number > 0 (hours, a learning rate, a step size, a scale)."""
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise CrtBenchError(f"{name} must be > 0 and finite, got {value}")
    return number


def check_name(what: str, name: str, *, forbidden: str = "/\\@") -> str:
    """A name that becomes part of a path or an id: non-empty, none of ``forbidden``."""
    if not name or any(c in name for c in forbidden):
        shown = ", ".join(repr(c) for c in forbidden)
        raise CrtBenchError(f"{what} {name!r} must be non-empty and contain none of {shown}")
    return name


def check_choice(what: str, value: str, choices: Iterable[str], *, hint: str = "") -> str:
    """``value`` if it is one of ``choices``, else "unknown WHAT 'x'; valid names: a, b, ..." (+ ``hint``)."""
    valid = list(choices)
    if value not in valid:
        raise CrtBenchError(f"unknown {what} {value!r}; valid names: {', '.join(valid)}{hint}")
    return value
