"""The summary table: certified accuracy on the radius grid and ACR for every certification."""
from __future__ import annotations

import pandas as pd

from crt_bench.analysis.metrics import summary_row
from crt_bench.analysis.select import run_variant
from crt_bench.core.constants import SUMMARY_RADII, TRANSFER_PROCEDURE
from crt_bench.store.store import ResultsStore


def _cost_seconds(run: pd.Series) -> float:
    """Training seconds to obtain the model, including a teacher trained only for it."""
    total = run.get("total_train_seconds")
    return float(total) if total is not None and not pd.isna(total) else float(run["train_seconds"])


def _kind(rows: pd.DataFrame) -> str:
    """``CERTIFY`` or ``transfer`` (a certificate transferred from a teacher's certification)."""
    first = rows["procedure"].iloc[0] if "procedure" in rows else ""
    return TRANSFER_PROCEDURE if first == TRANSFER_PROCEDURE else "CERTIFY"


def summary_table(store: ResultsStore) -> pd.DataFrame:
    """One row per certification (trained runs and imported logs), oldest first."""
    certs = store.read("certify")
    if certs.empty:
        return pd.DataFrame()
    runs = store.runs()
    runs = runs.set_index("run_id") if not runs.empty else runs
    out = []
    for cert_id, rows in certs.groupby("cert_id", sort=False):
        run_id = rows["run_id"].iloc[0]
        run = runs.loc[run_id] if not runs.empty and run_id in runs.index else None
        record = {
            "cert_id": cert_id,
            "run_id": run_id,
            "method": run["method"] if run is not None else "imported",
            "variant": run_variant(run) if run is not None else "",
            "certification": _kind(rows),
            "arch": run["arch"] if run is not None else "",
            "dataset": run["dataset"] if run is not None else "",
            "sigma": float(rows["sigma"].iloc[0]),
            "N": int(rows["n"].iloc[0]),
            "train_hours": _cost_seconds(run) / 3600 if run is not None else float("nan"),
        }
        record.update(summary_row(rows, SUMMARY_RADII))
        out.append(record)
    return pd.DataFrame(out)


def _shown_radius_columns(df: pd.DataFrame) -> list[str]:
    """The grid up to the largest radius any row certifies (at least up to r = 1.0)."""
    acc_cols = [c for c in df.columns if c.startswith("acc@")]
    nonzero = [i for i, c in enumerate(acc_cols) if (df[c] > 0).any()]
    last = max([4, *nonzero])
    return acc_cols[: last + 1]
