"""A cost-robustness leaderboard: the Pareto frontier of (training hours, ACR) over method x architecture.

RobustBench ranks empirical robustness without the cost of training; the CRT paper's point is the cost.
This module turns certifications into leaderboard *entries*, decides which entries may be ranked
together, and computes the frontier. Drawing and writing are in :mod:`crt_bench.report.leaderboard_report`.

**Comparability.** Hours depend on the device, ACR on the dataset, sigma, N and the certified images,
so entries are ranked only within a *group*: equal ``(dataset, sigma, device, N, subset)``, where
``subset`` names the exact set of certified test images (count + digest of their indices). An entry
without known hours, dataset, device or sigma is listed as unranked with the reason; asking for the
frontier of entries from different groups is refused (:func:`check_comparable`).

**Frontier.** An entry is dominated when another has hours <= and ACR >= with one of them strict; the
frontier is every entry that is not dominated (exact duplicates both stay). Ranks go by ACR, best first.
Two entries whose 95% bootstrap ACR intervals overlap are *tied*: the board says so beside the rank.

**Every number comes from per-image rows.** An entry carries its rows (idx, label, predict, radius,
correct); ACR, its interval and certified accuracy are recomputed from them (:mod:`crt_bench.metrics`,
:mod:`crt_bench.uncertainty`) wherever an entry is read, including a merged JSON file.

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
      "hours_kind": str,    # measured (wall clock of this store's run) | reported (given with --hours)
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
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crt_bench.errors import CrtBenchError
from crt_bench.metrics import certified_accuracy
from crt_bench.uncertainty import Interval, acr_interval

SCHEMA = "crt-bench/leaderboard-entry/1"
RADII: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
ROW_COLUMNS = ("idx", "label", "predict", "radius", "correct")
GROUP_FIELDS = ("dataset", "sigma", "device", "N", "subset")
IMPORTS_DIR = "leaderboard_imports"  # RESULTS/leaderboard_imports/<name>.json: what import-log --hours adds


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
    hours_kind: str
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
        return {float(r): float(v) for r, v in certified_accuracy(self.rows, RADII).items()}

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
            "import:") else ""
        return f"unknown {', '.join(missing)}{hint}"


# -- JSON --------------------------------------------------------------------------------------------
def summary_of(entry: Entry) -> dict[str, Any]:
    return {"images": entry.images, "acr": entry.acr.estimate, "acr_low": entry.acr.low, "acr_high": entry.acr.high,
            "certified_accuracy": {f"{r:g}": v for r, v in entry.certified.items()}}


def to_json(entry: Entry) -> str:
    rows = entry.rows
    doc = {"schema": SCHEMA, "entry_id": entry.entry_id, "method": entry.method, "arch": entry.arch,
           "teacher": entry.teacher, "dataset": entry.dataset, "sigma": entry.sigma, "device": entry.device,
           "N": entry.N, "N0": entry.N0, "alpha": entry.alpha, "subset": entry.subset, "hours": entry.hours,
           "hours_kind": entry.hours_kind, "commit": entry.commit, "origin": entry.origin,
           "summary": summary_of(entry),
           "rows": {"idx": rows["idx"].astype(int).tolist(), "label": rows["label"].astype(int).tolist(),
                    "predict": rows["predict"].astype(int).tolist(),
                    "radius": rows["radius"].astype(float).tolist(), "correct": rows["correct"].astype(int).tolist()}}
    return json.dumps(doc, indent=1)


def from_json(text: str, source: str = "<json>") -> Entry:
    """An entry from its JSON text; refuses another schema, missing fields, or a summary its rows do not give."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise CrtBenchError(f"{source} is not JSON ({err})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise CrtBenchError(f"{source} is not a leaderboard entry of schema {SCHEMA!r} "
                            f"(schema: {doc.get('schema') if isinstance(doc, dict) else None!r})")
    required = ["entry_id", "method", "arch", "teacher", "dataset", "sigma", "device", "N", "N0", "alpha", "hours",
                "hours_kind", "commit", "origin", "rows"]
    missing = [k for k in required if k not in doc]
    missing += [f"rows.{c}" for c in ROW_COLUMNS if c not in doc.get("rows", {})]
    if missing:
        raise CrtBenchError(f"{source} lacks field(s) {', '.join(missing)} of schema {SCHEMA}")
    rows = pd.DataFrame({c: doc["rows"][c] for c in ROW_COLUMNS})
    if rows.empty:
        raise CrtBenchError(f"{source} has no per-image rows: its numbers cannot be recomputed")
    entry = Entry(entry_id=str(doc["entry_id"]), method=str(doc["method"]), arch=str(doc["arch"]),
                  teacher=str(doc["teacher"]), dataset=str(doc["dataset"]),
                  sigma=None if doc["sigma"] is None else float(doc["sigma"]), device=str(doc["device"]),
                  N=int(doc["N"]), N0=int(doc["N0"]), alpha=float(doc["alpha"]),
                  hours=None if doc["hours"] is None else float(doc["hours"]), hours_kind=str(doc["hours_kind"]),
                  commit=str(doc["commit"]), origin=str(doc["origin"]),
                  rows=rows.astype({"idx": "int64", "label": "int64", "predict": "int64", "radius": "float64",
                                    "correct": "int64"}))
    stated = doc.get("summary")
    if stated is not None and not _same_summary(stated, summary_of(entry)):
        raise CrtBenchError(f"{source}: its summary does not follow from its per-image rows (recomputed "
                            f"{summary_of(entry)}); numbers are taken from rows only")
    if "subset" in doc and doc["subset"] != entry.subset:
        raise CrtBenchError(f"{source}: subset {doc['subset']!r} does not match its rows' indices ({entry.subset})")
    return entry


def _same_summary(a: dict, b: dict) -> bool:
    try:
        flat = lambda d: [d["images"], d["acr"], d["acr_low"], d["acr_high"],  # noqa: E731
                          *[d["certified_accuracy"][k] for k in sorted(b["certified_accuracy"])]]
        return bool(np.allclose(flat(a), flat(b), rtol=0, atol=1e-9))
    except (KeyError, TypeError):
        return False


def write_entries(entries: list[Entry], folder: str | Path) -> list[Path]:
    from crt_bench.results import atomic_write_bytes

    folder = Path(folder)
    return [atomic_write_bytes(folder / f"{_slug(e.entry_id)}.json", to_json(e).encode()) for e in entries]


def read_entries(folder: str | Path) -> list[Entry]:
    """Every ``*.json`` entry of a folder (``--merge``); a file that is not an entry is refused by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CrtBenchError(f"--merge {folder}: no such directory")
    return [from_json(p.read_text(encoding="utf-8"), str(p)) for p in sorted(folder.glob("*.json"))]


def merge(*sources: list[Entry]) -> list[Entry]:
    """Entries of several sources, one per ``entry_id`` (the first source wins: this store over merged files)."""
    out: dict[str, Entry] = {}
    for entries in sources:
        for e in entries:
            out.setdefault(e.entry_id, e)
    return list(out.values())


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


# -- from a results store -------------------------------------------------------------------------------
def record_import_meta(results: str | Path, name: str, **meta: Any) -> Path:
    """What ``import-log`` knows beyond the log (hours, method, arch, teacher, dataset, device)."""
    from crt_bench.results import atomic_write_bytes

    return atomic_write_bytes(Path(results) / IMPORTS_DIR / f"{_slug(name)}.json",
                              json.dumps({k: v for k, v in meta.items() if v is not None}, indent=1).encode())


def _import_meta(results: Path, name: str) -> dict[str, Any]:
    path = results / IMPORTS_DIR / f"{_slug(name)}.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def entries_from_store(store: Any) -> list[Entry]:
    """One entry per run's newest certification and per imported log of a :class:`ResultsStore`."""
    from crt_bench.report.paper_tables import IMPORT_PREFIX, certifications

    meta, rows = certifications(store)
    out = []
    for m in meta.to_dict("records") if not meta.empty else []:
        part = rows[m["cert_id"]]
        first = part.iloc[0]
        common = dict(N=int(m["N"]), N0=int(first.get("n0", -1)), alpha=float(first.get("alpha", float("nan"))),
                      rows=part[list(ROW_COLUMNS)].reset_index(drop=True))
        sigma = None if m["sigma"] is None or math.isnan(m["sigma"]) else float(m["sigma"])
        if m["imported"]:
            name = str(m["run_id"]).removeprefix(IMPORT_PREFIX)
            extra = _import_meta(Path(store.root), name)
            out.append(Entry(entry_id=str(m["run_id"]), method=extra.get("method", ""), arch=extra.get("arch", ""),
                             teacher=extra.get("teacher", ""), dataset=extra.get("dataset", ""), sigma=sigma,
                             device=extra.get("device", ""), hours=extra.get("hours"),
                             hours_kind="reported" if extra.get("hours") is not None else "unknown",
                             commit="", origin=str(first.get("source", "")), **common))
            continue
        hours = m["hours"] if m["hours"] == m["hours"] and m["status"] == "finished" else None
        teacher = f"{m['teacher_method'] or '?'} {m['teacher']}".strip() if m["teacher"] else ""
        out.append(Entry(entry_id=str(m["cert_id"]), method=m["method"], arch=m["arch"], teacher=teacher,
                         dataset=m["dataset"], sigma=sigma, device=m["device"] or m["cert_device"], hours=hours,
                         hours_kind="measured" if hours is not None else "unknown",
                         commit=m["git_commit"] or m["cert_git_commit"], origin=str(store.root), **common))
    return out


def missing_from_store(store: Any) -> list[tuple[str, str]]:
    """Runs of the store that have no entry, with the reason (no per-image rows, no number on the board)."""
    runs = store.runs()
    if runs.empty:
        return []
    certs = store.read("certify")
    certified = set(certs["run_id"]) if not certs.empty else set()
    out = []
    for r in runs.to_dict("records"):
        if r["run_id"] in certified:
            continue
        status = str(r.get("status", ""))
        reason = ("trained but not certified (no per-image rows; `crt-bench certify RUN`)" if status == "finished"
                  else f"run {status or 'unknown'}: not finished, not certified")
        out.append((f"{r['method']} {r['arch']} ({r['run_id']})", reason))
    return out


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


BOARD_COLUMNS = ["rank", "status", "tied_with", "method", "arch", "teacher", "hours", "hours_kind", "ACR", "ACR_low",
                 "ACR_high", *[f"acc@{r:g}" for r in RADII], "images", "N", "commit", "device", "entry_id"]


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
                        "hours_kind": e.hours_kind, "ACR": e.acr.estimate, "ACR_low": e.acr.low,
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


__all__ = ["BOARD_COLUMNS", "Entry", "GROUP_FIELDS", "IMPORTS_DIR", "Leaderboard", "RADII", "SCHEMA", "board",
           "check_comparable", "dominates", "entries_from_store", "from_json", "group_entries", "incomparability",
           "merge", "missing_from_store", "overlaps", "pareto_frontier", "read_entries", "record_import_meta", "to_json", "write_entries"]
