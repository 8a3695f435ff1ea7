"""Rich tables printed by the CLI."""
from __future__ import annotations

import pandas as pd
from rich.table import Table

from crt_bench.analysis.summary import _shown_radius_columns
from crt_bench.core.constants import IMPORT_PREFIX, TRANSFER_PROCEDURE


def rich_summary(df: pd.DataFrame) -> Table:
    table = Table(title="Certified accuracy (fraction of images) by L2 radius, and ACR")
    acc_cols = _shown_radius_columns(df)
    for col in ["name", "method", "arch", "sigma", "N", "images", *[c[4:] for c in acc_cols], "ACR", "train h"]:
        # A run id is what the user copies into the next command: never cut, never folded.
        table.add_column(col, justify="left" if col in ("name", "method", "arch") else "right",
                         no_wrap=col == "name", overflow="fold" if col != "name" else "ignore",
                         min_width=max([len(str(n)) for n in df["run_id"]], default=4) if col == "name" else None)
    for _, r in df.iterrows():
        name = r["run_id"].removeprefix(IMPORT_PREFIX)
        variant = r.get("variant", "")
        method = r["method"] + (f" ({variant})" if isinstance(variant, str) and variant else "")
        method += " (transfer)" if r.get("certification") == TRANSFER_PROCEDURE else ""
        table.add_row(name, method, r["arch"], f"{r['sigma']:.2f}", str(r["N"]), str(r["n_images"]),
                      *[f"{r[c]:.3f}" for c in acc_cols], f"{r['acr']:.3f}",
                      "" if pd.isna(r["train_hours"]) else f"{r['train_hours']:.3g}")
    return table
