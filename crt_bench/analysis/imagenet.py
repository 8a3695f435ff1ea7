"""The ImageNet table: certified accuracy at the ImageNet radii."""
from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from crt_bench.analysis.metrics import acr, certified_accuracy
from crt_bench.core.constants import IMAGENET_RADII


def imagenet_table(rows: pd.DataFrame, radii: Sequence[float] = IMAGENET_RADII) -> pd.DataFrame:
    """Certified accuracy at the paper's ImageNet radii (0.5 .. 3.0) and ACR, one row per certification."""

    out = []
    for cert_id, part in rows.groupby("cert_id", sort=False):
        acc = certified_accuracy(part, radii)
        out.append({"cert_id": cert_id, "images": len(part), **{f"r={r:g}": float(v) for r, v in zip(radii, acc)},
                    "acr": acr(part)})
    return pd.DataFrame(out)
