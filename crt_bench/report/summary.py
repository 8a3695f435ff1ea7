"""The summary table: certified accuracy on the radius grid and ACR for every certification."""
from __future__ import annotations

import pandas as pd
from rich.table import Table

from crt_bench.metrics import DEFAULT_RADII, summary_row
from crt_bench.results import ResultsStore


def _cost_seconds(run: pd.Series) -> float:
    """Training seconds to obtain the model, including a teacher trained only for it."""
    total = run.get("total_train_seconds")
    return float(total) if total is not None and not pd.isna(total) else float(run["train_seconds"])


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
            "arch": run["arch"] if run is not None else "",
            "dataset": run["dataset"] if run is not None else "",
            "sigma": float(rows["sigma"].iloc[0]),
            "N": int(rows["n"].iloc[0]),
            "train_hours": _cost_seconds(run) / 3600 if run is not None else float("nan"),
        }
        record.update(summary_row(rows, DEFAULT_RADII))
        out.append(record)
    return pd.DataFrame(out)


def _shown_radius_columns(df: pd.DataFrame) -> list[str]:
    """The grid up to the largest radius any row certifies (at least up to r = 1.0)."""
    acc_cols = [c for c in df.columns if c.startswith("acc@")]
    nonzero = [i for i, c in enumerate(acc_cols) if (df[c] > 0).any()]
    last = max([4, *nonzero])
    return acc_cols[: last + 1]


def rich_summary(df: pd.DataFrame) -> Table:
    table = Table(title="Certified accuracy (fraction of images) by L2 radius, and ACR")
    acc_cols = _shown_radius_columns(df)
    for col in ["name", "method", "arch", "sigma", "N", "images", *[c[4:] for c in acc_cols], "ACR", "train h"]:
        # A run id is what the user copies into the next command: never cut, never folded.
        table.add_column(col, justify="left" if col in ("name", "method", "arch") else "right",
                         no_wrap=col == "name", overflow="fold" if col != "name" else "ignore",
                         min_width=max([len(str(n)) for n in df["run_id"]], default=4) if col == "name" else None)
    for _, r in df.iterrows():
        name = r["run_id"].removeprefix("import:")
        table.add_row(name, r["method"], r["arch"], f"{r['sigma']:.2f}", str(r["N"]), str(r["n_images"]),
                      *[f"{r[c]:.3f}" for c in acc_cols], f"{r['acr']:.3f}",
                      "" if pd.isna(r["train_hours"]) else f"{r['train_hours']:.3g}")
    return table
