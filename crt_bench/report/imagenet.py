"""REPORT.md's ImageNet table: certified accuracy at the CRT paper's ImageNet radii (0.5 .. 3.0) and ACR.

The CIFAR-10 tables stop at r = 2.25; ImageNet models smoothed at sigma 0.5 or 1.0 certify radii past 3,
and the paper tabulates them at 0.5, 1.0, ..., 3.0 on 500 validation images (every 100th). The section
appears only when the store holds certifications of ImageNet runs.
"""
from __future__ import annotations

import pandas as pd

from crt_bench.analysis.imagenet import imagenet_table
from crt_bench.analysis.select import certifications
from crt_bench.core.constants import IMAGENET_RADII
from crt_bench.report.markdown import markdown_table
from crt_bench.store.store import ResultsStore


def imagenet_section(store: ResultsStore) -> list[str]:
    meta, rows = certifications(store)
    if meta.empty or "dataset" not in meta:
        return []
    mine = meta[meta["dataset"].fillna("").astype(str).str.startswith("imagenet")]  # imagenet, imagenet-small
    if mine.empty:
        return []
    table = imagenet_table(pd.concat([rows[c] for c in mine["cert_id"]], ignore_index=True))
    table = mine[["cert_id", "method", "arch", "sigma", "N"]].merge(table, on="cert_id")
    radii = [f"r={r:g}" for r in IMAGENET_RADII]
    lines = ["## ImageNet: certified accuracy at the paper's radii", "",
             *markdown_table(["method", "arch", "sigma", "N", "images", *radii, "ACR"],
                             [[r["method"], r["arch"], f"{r['sigma']:g}", f"{int(r['N']):,}", r["images"],
                               *[f"{r[c]:.3f}" for c in radii], f"{r['acr']:.3f}"] for r in table.to_dict("records")])]
    return [*lines, ""]
