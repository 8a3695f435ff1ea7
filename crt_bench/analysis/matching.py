"""Matched evidence: the certifications a comparison sets side by side must be made alike and be whole.

Two certifications compare only when they share N0, N, alpha, precision and subset (the certify rows'
columns ``n0, n, alpha, precision, subset``) and both finished (the ``certifications`` table's latest state;
a certification with no recorded state, from a store written before states were kept, counts as finished),
and, across methods, only over the training seeds both have. What does not match is left out and named,
with the reason, for the report's "Missing" lines.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from crt_bench.certify.stats import radius_from_counts

MATCH_COLUMNS = ("n0", "n", "alpha", "precision", "subset")


def _value(rows: pd.DataFrame, column: str):
    if column not in rows or rows.empty:
        return ""
    value = rows[column].iloc[0]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return float(value) if column == "alpha" else int(value) if column in ("n0", "n") else str(value)


def certification_key(rows: pd.DataFrame) -> tuple:
    """``(n0, n, alpha, precision, subset)`` of one certification ("" where an older store lacks the column)."""
    return tuple(_value(rows, c) for c in MATCH_COLUMNS)


def radius_cap(sigma: float, n: int, alpha: float) -> float:
    """The largest radius CERTIFY can give: ``sigma * Phi^-1(alpha ** (1 / n))`` (every one of n samples right)."""
    return float(radius_from_counts(n, n, alpha, sigma))


def describe_key(key: tuple, sigma: float) -> str:
    """``N0=100, N=10000, alpha=0.001, precision fp32, subset first-500, radius cap 0.800``."""
    n0, n, alpha, precision, subset = key
    parts = [f"N0={n0}", f"N={n}", f"alpha={alpha:g}" if alpha != "" else "alpha=?",
             f"precision {precision or 'not recorded'}", f"subset {subset or 'not recorded'}"]
    if n != "" and alpha != "" and not math.isnan(sigma):
        parts.append(f"radius cap {radius_cap(sigma, int(n), float(alpha)):.4f}")
    return ", ".join(parts)


@dataclass(frozen=True)
class Candidate:
    """One certification offered to a comparison: who it is (``name``), its training seed, its rows, state."""

    name: str
    method: str
    seed: float
    cert_id: str
    rows: pd.DataFrame
    status: str = ""


def match(candidates: Sequence[Candidate], methods: Sequence[str]) -> tuple[list[Candidate], tuple, list[str]]:
    """The candidates that compare: finished, of the most common key (ties: the earliest candidate's), of seeds
    every one of ``methods`` has. Returns (kept, their key, one reason per candidate left out)."""
    missing = []
    whole = []
    for c in candidates:
        if c.status and c.status != "finished":
            missing.append(f"{c.name}: certification {c.cert_id} is {c.status}, not compared")
        else:
            whole.append(c)
    if not whole:
        return [], (), missing
    keys = Counter(certification_key(c.rows) for c in whole)
    best = max(keys.values())
    key = next(certification_key(c.rows) for c in whole if keys[certification_key(c.rows)] == best)
    alike = []
    for c in whole:
        other = certification_key(c.rows)
        if other != key:
            diff = ", ".join(f"{col} {a!r} vs {b!r}" for col, a, b in zip(MATCH_COLUMNS, other, key) if a != b)
            missing.append(f"{c.name}: certification {c.cert_id} differs from the others ({diff}), not compared")
        else:
            alike.append(c)
    seeds = [{_seed(c.seed) for c in alike if c.method == m} for m in methods]
    shared = set.intersection(*seeds) if seeds else set()
    kept = [c for c in alike if _seed(c.seed) in shared]
    missing += [f"{c.name}: training seed {_seed(c.seed)} has no matching certification of every compared method, not compared"
                for c in alike if _seed(c.seed) not in shared]
    return kept, key, missing


def _seed(seed: float) -> int | str:
    return "" if seed != seed else int(seed)


__all__ = ["Candidate", "MATCH_COLUMNS", "certification_key", "describe_key", "match", "radius_cap"]
