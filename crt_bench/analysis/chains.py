"""The per-link table of a chain and the agreement between its links."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from crt_bench.analysis.metrics import certified_accuracy
from crt_bench.analysis.select import certifications
from crt_bench.analysis.uncertainty import acr_interval
from crt_bench.core.constants import TABLE_RADII
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.states import JobState
from crt_bench.models.files import load_model
from crt_bench.store.store import ResultsStore


# -- the per-link table -------------------------------------------------------------------------------
@dataclass
class _Certified:
    run_id: str
    rows: pd.DataFrame | None
    hours: float
    arch: str = ""
    method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _lookup(store: ResultsStore, meta: pd.DataFrame, rows: dict[str, pd.DataFrame], run_id: str | None) -> _Certified:
    """A run's newest certification and its own training hours (NaN when unknown)."""
    if run_id is None:
        return _Certified("", None, float("nan"))
    match = meta[meta["run_id"] == run_id] if not meta.empty else meta
    if match.empty:
        return _Certified(run_id, None, _run_hours(store, run_id))
    m = match.iloc[-1]
    return _Certified(run_id, rows[m["cert_id"]], _run_hours(store, run_id), str(m.get("arch", "")),
                      str(m.get("method", "")))


def _run_hours(store: ResultsStore, run_id: str) -> float:
    match = store.runs(where={"run_id": run_id})
    if match.empty or "train_seconds" not in match:
        return float("nan")
    return float(match["train_seconds"].iloc[0]) / 3600


def _root_run_id(store: ResultsStore, chain: dict[str, Any]) -> str | None:
    if chain["root_is_job"]:
        return store.finished_run(chain["root"])
    root = str(chain["root"])
    if not store.runs(where={"run_id": root}).empty:
        return root

    try:  # a model file: certify_run names its certification after the model's recorded run id, else the path
        return load_model(root, store.root).meta.get("run_id") or root
    except (CrtBenchError, OSError):
        return root


def agreement(root: pd.DataFrame, link: pd.DataFrame) -> tuple[float, float, int]:
    """(fraction of shared images with the same smoothed prediction, mean |radius difference|, images shared)."""
    both = root[["idx", "predict", "radius"]].merge(link[["idx", "predict", "radius"]], on="idx",
                                                   suffixes=("_root", "_link"))
    if both.empty:
        return float("nan"), float("nan"), 0
    same = float((both["predict_root"] == both["predict_link"]).mean())
    diff = float(np.abs(both["radius_root"] - both["radius_link"]).mean())
    return same, diff, len(both)


CHAIN_COLUMNS = ["chain", "generation", "arch", "teacher", "run_id", "status", "hours", "cumulative_hours", "images",
                 "N", "ACR", "ACR_low", "ACR_high", "acc@0.00", "acc@0.25", "acc@0.50", "acc@0.75", "acc@1.00",
                 "agreement", "mean_abs_radius_diff", "shared_images", "direct_ACR", "direct_ACR_low",
                 "direct_ACR_high", "direct_run_id"]


def chain_table(store: ResultsStore, chain: dict[str, Any]) -> pd.DataFrame:
    """Generation 0 (the root) then one row per link; a link not yet finished or certified has NaNs."""

    meta, rows = certifications(store)
    finished = store.finished_runs()
    root = _lookup(store, meta, rows, _root_run_id(store, chain))
    records = []
    cumulative = root.hours if not math.isnan(root.hours) else 0.0
    previous = "root"
    for gen, key in enumerate([None, *chain["links"]]):
        if key is None:
            cert, status, hours, arch = root, "root", root.hours, root.arch
        else:
            run_id = finished.get(key)
            cert = _lookup(store, meta, rows, run_id)
            status = (JobState.FINISHED if run_id else JobState.NOT_FINISHED).value
            hours = cert.hours
            arch = key.split("/")[1]
            if not math.isnan(hours):
                cumulative += hours
        record: dict[str, Any] = {"chain": chain["name"], "generation": gen, "arch": arch or "root",
                                  "teacher": "" if key is None else previous, "run_id": cert.run_id,
                                  "status": status, "hours": hours,
                                  "cumulative_hours": cumulative if key is None or not math.isnan(hours) else float("nan")}
        if cert.rows is not None:
            ci = acr_interval(cert.rows)
            acc = certified_accuracy(cert.rows, TABLE_RADII)
            same, diff, shared = agreement(root.rows, cert.rows) if root.rows is not None else (float("nan"),) * 2 + (0,)
            record.update({"images": len(cert.rows), "N": int(cert.rows["n"].iloc[0]) if "n" in cert.rows else -1,
                           "ACR": ci.estimate, "ACR_low": ci.low, "ACR_high": ci.high,
                           **{f"acc@{r:.2f}": float(v) for r, v in acc.items()},
                           "agreement": same, "mean_abs_radius_diff": diff, "shared_images": shared})
        if key is not None:
            direct_key = chain["direct"].get(arch)
            direct = _lookup(store, meta, rows, finished.get(direct_key)) if direct_key else None
            if direct is not None and direct.rows is not None:
                dci = acr_interval(direct.rows)
                record.update({"direct_ACR": dci.estimate, "direct_ACR_low": dci.low, "direct_ACR_high": dci.high,
                               "direct_run_id": direct.run_id})
        records.append(record)
        previous = arch or "root"
    return pd.DataFrame(records).reindex(columns=CHAIN_COLUMNS)
