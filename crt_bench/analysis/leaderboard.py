"""A cost-robustness leaderboard: the Pareto frontier of (training hours, ACR) over method x architecture.

RobustBench ranks empirical robustness without the cost of training; the CRT paper's point is the cost.
This module turns certifications into leaderboard *entries*, decides which entries may be ranked
together, and computes the frontier. Drawing and writing are in :mod:`crt_bench.report.leaderboard`.

**Comparability.** Hours depend on the device, ACR on the dataset, sigma, N and the certified images,
so entries are ranked only within a *group*: equal ``(dataset, sigma, device, N, subset)``, where
``subset`` names the exact set of certified test images (count + digest of their indices). An entry
without known hours, dataset, device or sigma is listed as unranked with the reason; asking for the
frontier of entries from different groups is refused (:func:`check_comparable`).

**Frontier.** An entry is dominated when another has hours <= and ACR >= with one of them strict; the
frontier is every entry that is not dominated (exact duplicates both stay). Ranks go by ACR, best first.
Two entries whose 95% bootstrap ACR intervals overlap are *tied*: the board says so beside the rank.

**Every number comes from per-image rows.** An entry carries its rows (idx, label, predict, radius,
correct); ACR, its interval and certified accuracy are recomputed from them (:mod:`crt_bench.analysis.metrics`,
:mod:`crt_bench.analysis.uncertainty`) wherever an entry is read, including a merged JSON file.

JSON schema ``crt-bench/leaderboard-entry/1`` (one file per entry, UTF-8)::

    {
      "schema": "crt-bench/leaderboard-entry/1",
      "entry_id": str,      # unique name: the certification id, or "import:<log name>"
      "method": str,        # training method (crt-bench list methods), "" unknown
      "arch": str,          # architecture (crt-bench list archs), "" unknown
      "teacher": str,       # CRT: "<teacher method> <teacher arch>", "" for none
      "dataset": str,       # cifar10 | fashion-mnist | ...; "" unknown (unranked)
      "sigma": float|null,  # smoothing noise; null unknown (unranked)
      "device": str,        # the device that trained it (hours are this device's); "" unknown (unranked)
      "N": int, "N0": int, "alpha": float,   # CERTIFY's samples and failure probability
      "subset": str,        # "<images> images #<8 hex digits of blake2b over the sorted indices>"
      "hours": float|null,  # training hours, a dedicated teacher's included; null unknown (unranked)
      "hours_basis": str,    # measured (wall clock of this store's run) | reported (given with --hours)
      "commit": str,        # crt-bench git commit that trained it; "" unknown
      "origin": str,        # where the rows came from: a results directory or a published log file
      "summary": {"images": int, "acr": float, "acr_low": float, "acr_high": float,
                  "certified_accuracy": {"0.25": float, "0.5": float, "0.75": float, "1.0": float}},
      "rows": {"idx": [int], "label": [int], "predict": [int], "radius": [float], "correct": [int]}
    }

``summary`` is derived: it is written for readers of the file and checked against ``rows`` when the
file is read (a mismatch is refused, so an edited number cannot slip into the board).
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from crt_bench.analysis.metrics import certified_accuracy
from crt_bench.analysis.uncertainty import Interval, acr_interval
from crt_bench.core.constants import IMPORT_PREFIX, LEADERBOARD_RADII
from crt_bench.core.errors import CrtBenchError

SCHEMA = "crt-bench/leaderboard-entry/1"
ROW_COLUMNS = ("idx", "label", "predict", "radius", "correct")
GROUP_FIELDS = ("dataset", "sigma", "device", "N", "subset")


@dataclass(frozen=True, eq=False)
class Entry:
    """One certified model (or published log) with its training cost; numbers are properties of ``rows``."""

    entry_id: str
    method: str
    arch: str
    teacher: str
    dataset: str
    sigma: float | None
    device: str
    N: int
    N0: int
    alpha: float
    hours: float | None
    hours_basis: str
    commit: str
    origin: str
    rows: pd.DataFrame = field(repr=False)

    @cached_property
    def subset(self) -> str:
        idx = np.sort(self.rows["idx"].to_numpy(dtype=np.int64))
        digest = hashlib.blake2b(idx.tobytes(), digest_size=4).hexdigest()
        return f"{len(idx)} images #{digest}"

    @property
    def images(self) -> int:
        return len(self.rows)

    @cached_property
    def acr(self) -> Interval:
        return acr_interval(self.rows)

    @cached_property
    def certified(self) -> dict[float, float]:
        return {float(r): float(v) for r, v in certified_accuracy(self.rows, LEADERBOARD_RADII).items()}

    @property
    def label(self) -> str:
        return f"{self.method or '?'} {self.arch or '?'}" + (f" <- {self.teacher}" if self.teacher else "")

    def group(self) -> tuple:
        return tuple(getattr(self, name) for name in GROUP_FIELDS)

    def unranked_reason(self) -> str:
        """Why this entry cannot be placed on any frontier ("" when it can)."""
        missing = [name for name, value in (("training hours", self.hours), ("dataset", self.dataset),
                                            ("device", self.device), ("sigma", self.sigma))
                   if value in (None, "") or (isinstance(value, float) and math.isnan(value))]
        if not missing:
            return ""
        hint = " (import-log takes --hours, --dataset, --device, --method, --arch)" if self.entry_id.startswith(
            IMPORT_PREFIX) else ""
        return f"unknown {', '.join(missing)}{hint}"


# -- JSON --------------------------------------------------------------------------------------------
def summary_of(entry: Entry) -> dict[str, Any]:
    return {"images": entry.images, "acr": entry.acr.estimate, "acr_low": entry.acr.low, "acr_high": entry.acr.high,
            "certified_accuracy": {f"{r:g}": v for r, v in entry.certified.items()}}


# -- comparability and the frontier -------------------------------------------------------------------
def incomparability(a: Entry, b: Entry) -> str:
    """Why two entries may not be ranked together ("" when they may)."""
    diffs = [f"{name} {getattr(a, name)!r} vs {getattr(b, name)!r}" for name in GROUP_FIELDS
             if getattr(a, name) != getattr(b, name)]
    return "; ".join(diffs)


def check_comparable(entries: list[Entry]) -> None:
    """Refuse (CrtBenchError) entries that are unrankable or from different groups, naming the difference."""
    for e in entries:
        if reason := e.unranked_reason():
            raise CrtBenchError(f"{e.entry_id} cannot be ranked: {reason}")
    for e in entries[1:]:
        if reason := incomparability(entries[0], e):
            raise CrtBenchError(f"{entries[0].entry_id} and {e.entry_id} are not comparable ({reason}): entries "
                                "from different datasets, sigmas, devices, N or certified images are never ranked "
                                "together")


def dominates(a: Entry, b: Entry) -> bool:
    """``a`` costs no more and certifies no less than ``b``, and is strictly better in one of the two."""
    ha, hb, ra, rb = a.hours, b.hours, a.acr.estimate, b.acr.estimate
    return ha <= hb and ra >= rb and (ha < hb or ra > rb)  # type: ignore[operator]


def pareto_frontier(entries: list[Entry]) -> list[Entry]:
    """The entries no other entry dominates, best ACR first (ties in ACR: fewer hours first)."""
    check_comparable(entries)
    front = [e for e in entries if not any(dominates(o, e) for o in entries if o is not e)]
    return sorted(front, key=lambda e: (-e.acr.estimate, e.hours))


def overlaps(a: Entry, b: Entry) -> bool:
    return a.acr.low <= b.acr.high and b.acr.low <= a.acr.high


BOARD_COLUMNS = ["rank", "status", "tied_with", "method", "arch", "teacher", "hours", "hours_basis", "ACR", "ACR_low",
                 "ACR_high", *[f"acc@{r:g}" for r in LEADERBOARD_RADII], "images", "N", "commit", "device", "entry_id"]


def board(entries: list[Entry]) -> pd.DataFrame:
    """One group's table: frontier entries ranked 1.. (best ACR first), then dominated ones (rank "-").

    ``status`` is ``frontier`` or ``dominated by #k``; ``tied_with`` lists the rows (by rank, or by
    label for unranked rows) whose ACR interval overlaps this row's.
    """
    front = pareto_frontier(entries)  # checks comparability
    rest = sorted([e for e in entries if e not in front], key=lambda e: (-e.acr.estimate, e.hours))
    ranks = {id(e): str(i) for i, e in enumerate(front, 1)}
    name = {id(e): (f"#{ranks[id(e)]}" if id(e) in ranks else e.label) for e in entries}
    records = []
    for e in [*front, *rest]:
        if id(e) in ranks:
            status = "frontier"
        else:
            by = next(f for f in front if dominates(f, e)) if any(dominates(f, e) for f in front) else None
            status = f"dominated by {name[id(by)]}" if by is not None else "dominated"
        tied = [name[id(o)] for o in [*front, *rest] if o is not e and overlaps(e, o)]
        records.append({"rank": ranks.get(id(e), "-"), "status": status, "tied_with": ", ".join(tied),
                        "method": e.method, "arch": e.arch, "teacher": e.teacher, "hours": e.hours,
                        "hours_basis": e.hours_basis, "ACR": e.acr.estimate, "ACR_low": e.acr.low,
                        "ACR_high": e.acr.high, **{f"acc@{r:g}": v for r, v in e.certified.items()},
                        "images": e.images, "N": e.N, "commit": e.commit, "device": e.device,
                        "entry_id": e.entry_id})
    return pd.DataFrame(records, columns=BOARD_COLUMNS)


@dataclass
class Leaderboard:
    """Boards per comparable group, and every entry that could not be ranked, with the reason."""

    groups: dict[tuple, list[Entry]]
    unranked: list[tuple[Entry, str]]


def group_entries(entries: list[Entry]) -> Leaderboard:
    groups: dict[tuple, list[Entry]] = {}
    unranked = []
    for e in entries:
        if reason := e.unranked_reason():
            unranked.append((e, reason))
        else:
            groups.setdefault(e.group(), []).append(e)
    return Leaderboard(groups, unranked)
