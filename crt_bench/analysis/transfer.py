"""Certificate transfer side by side with CERTIFY: what a transferred certificate saves and what it costs.

One row per transferred certification (``certify --transfer-from``, rows of ``procedure == "transfer"``) whose
student also has a plain CERTIFY certification: seconds per image of each (mean of the per-image
``seconds``), the speed-up (plain / transfer), ACR of each with its 95% bootstrap interval over the
certified images, the paired ACR difference (transfer - plain, over the images both certified), the
fraction of images whose radius changed, and the mean disagreement rate between student and teacher
under the noise (``disagreements / n_p``, over the images the teacher did not abstain on).
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from crt_bench.analysis.select import certifications, transferred
from crt_bench.analysis.uncertainty import acr_interval, paired_acr_difference
from crt_bench.store.store import ResultsStore


def _mean_seconds(rows: pd.DataFrame) -> float:
    return float(pd.to_numeric(rows["seconds"], errors="coerce").mean()) if "seconds" in rows else float("nan")


def transfer_table(store: ResultsStore) -> pd.DataFrame:
    """The side-by-side table (empty when no student has both a transferred and a plain certification)."""
    certify = store.read("certify")
    transfers = certify[transferred(certify)]
    if transfers.empty:
        return pd.DataFrame()
    meta, plain_rows = certifications(store, certify)
    plain_of_run = {r["run_id"]: r for r in meta.to_dict("records")} if not meta.empty else {}
    runs = store.runs()
    arch_of = dict(zip(runs["run_id"], runs["arch"])) if not runs.empty else {}
    out = []
    for cert_id, rows in transfers.groupby("cert_id", sort=False):
        run_id = str(rows["run_id"].iloc[0])
        plain = plain_of_run.get(run_id)
        if plain is None:
            continue
        base = plain_rows[plain["cert_id"]]
        source = str(rows["transfer_from"].iloc[0])
        teacher_run = source.rsplit("@N", 1)[0]
        both = base[["idx", "radius", "predict"]].merge(rows[["idx", "radius", "predict"]], on="idx",
                                                         suffixes=("_plain", "_transfer"))
        changed = ((both["radius_plain"] - both["radius_transfer"]).abs() > 1e-12) | (
            both["predict_plain"] != both["predict_transfer"])
        seen = pd.to_numeric(rows.get("disagreements"), errors="coerce")
        n_p = int(rows["n_p"].iloc[0]) if "n_p" in rows else -1
        rate = seen[seen >= 0] / n_p if n_p > 0 else pd.Series(dtype=float)
        plain_s, transfer_s = _mean_seconds(base), _mean_seconds(rows)
        out.append({
            "student": plain["arch"], "method": plain["method"], "seed": plain["seed"],
            "teacher": arch_of.get(teacher_run, teacher_run), "images": len(both), "n_p": n_p,
            "alpha_zeta": float(rows["alpha_zeta"].iloc[0]) if "alpha_zeta" in rows else float("nan"),
            "plain_seconds_per_image": plain_s, "transfer_seconds_per_image": transfer_s,
            "speedup": plain_s / transfer_s if transfer_s > 0 else float("nan"),
            "plain_acr": acr_interval(base), "transfer_acr": acr_interval(rows),
            "transfer_minus_plain": paired_acr_difference(rows, base) if len(both) else None,
            "radius_changed": float(changed.mean()) if len(both) else float("nan"),
            "disagreement_rate": float(rate.mean()) if len(rate) else float("nan"),
            "plain_cert_id": plain["cert_id"], "transfer_cert_id": cert_id,
        })
    return pd.DataFrame(out)


def flat_transfer_table(table: pd.DataFrame) -> pd.DataFrame:
    """``transfer_table`` with each interval as estimate/low/high columns (for CSV)."""
    if table.empty:
        return table
    flat = table.copy()
    for col in ("plain_acr", "transfer_acr", "transfer_minus_plain"):
        flat[col] = [np.nan if i is None else i.estimate for i in table[col]]
        flat[f"{col}_low"] = [np.nan if i is None else i.low for i in table[col]]
        flat[f"{col}_high"] = [np.nan if i is None else i.high for i in table[col]]
    return flat
