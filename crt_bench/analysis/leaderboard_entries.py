"""Leaderboard entries: JSON in/out, merging, and entries from a results store."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from crt_bench.analysis.costs import pipeline_hours
from crt_bench.analysis.leaderboard import ROW_COLUMNS, SCHEMA, Entry, summary_of
from crt_bench.analysis.select import certifications, transferred
from crt_bench.core.atomic import atomic_write_bytes
from crt_bench.core.constants import IMPORT_PREFIX
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.states import RunStatus
from crt_bench.store.imports import file_slug, read_import_meta


def to_json(entry: Entry) -> str:
    rows = entry.rows
    doc = {"schema": SCHEMA, "entry_id": entry.entry_id, "method": entry.method, "arch": entry.arch,
           "teacher": entry.teacher, "dataset": entry.dataset, "sigma": entry.sigma, "device": entry.device,
           "N": entry.N, "N0": entry.N0, "alpha": entry.alpha, "subset": entry.subset, "hours": entry.hours,
           "hours_basis": entry.hours_basis, "commit": entry.commit, "origin": entry.origin,
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
    if "hours_kind" in doc and "hours_basis" not in doc:  # the field's name in entries written before 2026-12-07
        doc["hours_basis"] = doc.pop("hours_kind")
    required = ["entry_id", "method", "arch", "teacher", "dataset", "sigma", "device", "N", "N0", "alpha", "hours",
                "hours_basis", "commit", "origin", "rows"]
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
                  hours=None if doc["hours"] is None else float(doc["hours"]), hours_basis=str(doc["hours_basis"]),
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

    folder = Path(folder)
    return [atomic_write_bytes(folder / f"{file_slug(e.entry_id)}.json", to_json(e).encode()) for e in entries]


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


def entries_from_store(store: Any) -> list[Entry]:
    """One entry per run's newest certification and per imported log of a :class:`ResultsStore`."""

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
            extra = read_import_meta(Path(store.root), name)
            out.append(Entry(entry_id=str(m["run_id"]), method=extra.get("method", ""), arch=extra.get("arch", ""),
                             teacher=extra.get("teacher", ""), dataset=extra.get("dataset", ""), sigma=sigma,
                             device=extra.get("device", ""), hours=extra.get("hours"),
                             hours_basis="reported" if extra.get("hours") is not None else "unknown",
                             commit="", origin=str(first.get("source", "")), **common))
            continue
        total = pipeline_hours(m)  # denoised smoothing: its classifier's hours too
        hours = total if total == total and m["status"] == RunStatus.FINISHED else None
        teacher = f"{m['teacher_method'] or '?'} {m['teacher']}".strip() if m["teacher"] else ""
        if m.get("variant"):  # denoised smoothing's mse and stability runs share method, arch and classifier
            teacher = f"{teacher}; variant {m['variant']}".lstrip("; ")
        out.append(Entry(entry_id=str(m["cert_id"]), method=m["method"], arch=m["arch"], teacher=teacher,
                         dataset=m["dataset"], sigma=sigma, device=m["device"] or m["cert_device"], hours=hours,
                         hours_basis="measured" if hours is not None else "unknown",
                         commit=m["git_commit"] or m["cert_git_commit"], origin=str(store.root), **common))
    return out


def missing_from_store(store: Any) -> list[tuple[str, str]]:
    """Runs of the store that have no entry, with the reason (no per-image rows, no number on the board)."""
    runs = store.runs()
    if runs.empty:
        return []
    certs = store.read("certify")
    is_transfer = transferred(certs)
    certified = set(certs.loc[~is_transfer, "run_id"]) if not certs.empty else set()
    by_transfer = set(certs.loc[is_transfer, "run_id"]) if not certs.empty else set()
    out = []
    for r in runs.to_dict("records"):
        if r["run_id"] in certified:
            continue
        status = str(r.get("status", ""))
        if status != RunStatus.FINISHED:
            reason = f"run {status or 'unknown'}: not finished, not certified"
        elif r["run_id"] in by_transfer:  # the board ranks CERTIFY results; a transferred certificate is no entry
            reason = "certified only by transfer from its teacher (no CERTIFY rows; `crt-bench certify RUN`)"
        else:
            reason = "trained but not certified (no per-image rows; `crt-bench certify RUN`)"
        out.append((f"{r['method']} {r['arch']} ({r['run_id']})", reason))
    return out
