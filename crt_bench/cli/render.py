"""Rich tables printed by the CLI."""
from __future__ import annotations

import pandas as pd
from rich.table import Table

from crt_bench.analysis.summary import _shown_radius_columns
from crt_bench.core.constants import IMPORT_PREFIX


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
        table.add_row(name, r["method"], r["arch"], f"{r['sigma']:.2f}", str(r["N"]), str(r["n_images"]),
                      *[f"{r[c]:.3f}" for c in acc_cols], f"{r['acr']:.3f}",
                      "" if pd.isna(r["train_hours"]) else f"{r['train_hours']:.3g}")
    return table



def method_defaults_table(name: str) -> Table:
    """A method's paper defaults (per sigma where the paper varies them) and its recipe."""
    import dataclasses

    from crt_bench.methods.registry import get_method

    spec = get_method(name)
    r = spec.recipe
    per_sigma = hasattr(spec.hparams, "for_sigma")
    sigmas = (0.25, 0.5, 1.0) if per_sigma else (None,)
    table = Table(title=f"{name}: hyper-parameters (override with --set KEY=VALUE)",
                  caption=f"recipe: {r.epochs} epochs, batch {r.batch_size}, lr {r.lr} x{r.gamma} at epochs "
                          f"{list(r.milestones)} (0-based), momentum {r.momentum}, weight decay {r.weight_decay}; "
                          f"{r.source}\n{spec.reference}")
    table.add_column("hyper-parameter")
    for sigma in sigmas:
        table.add_column("default" if sigma is None else f"sigma={sigma}")
    hps = [dataclasses.asdict(spec.make_hparams(sigma=sigma)) for sigma in sigmas]
    for key in hps[0]:
        table.add_row(key, *[str(hp[key]) for hp in hps])
    return table
