"""The slowdown table: each method's training cost relative to Gaussian training of the same network.

Built from the ``timing`` table (projected from probes) and, where a full paper-recipe run finished,
the ``runs`` table (measured). The paper's whole-run ratios for ResNet-110 (CRT paper, Table 1;
one V100) stand beside ours.
"""
from __future__ import annotations

import pandas as pd

from crt_bench.results import ResultsStore

PAPER_SLOWDOWN = {"smoothadv": 46.20, "macer": 20.86, "smoothmix": 4.97}
METHOD_ORDER = ["gaussian", "crt", "consistency", "smoothmix", "macer", "smoothadv"]


PROFILE_RANK = {"paper": 0, "cpu": 1, "smoke": 2}  # larger probes measure better


def latest_timings(store: ResultsStore) -> pd.DataFrame:
    """Per (method, arch, teacher, sigma, device): the newest probe of the largest probe profile."""
    df = store.read("timing")
    if df.empty:
        return df
    keys = ["method", "arch", "teacher_arch", "sigma", "device"]
    rank = df["profile"].map(PROFILE_RANK).fillna(len(PROFILE_RANK)) if "profile" in df else 0
    df = df.assign(_rank=-rank).sort_values(["_rank", "time"], kind="stable")
    return df.groupby(keys, sort=False).tail(1).drop(columns="_rank").reset_index(drop=True)


def measured_hours(store: ResultsStore) -> pd.DataFrame:
    """Finished paper-profile runs: (method, arch, sigma, teacher_arch) -> measured training hours."""
    runs = store.runs()
    if runs.empty:
        return pd.DataFrame(columns=["method", "arch", "sigma", "teacher_arch", "measured_hours"])
    done = runs[(runs["status"] == "finished") & (runs["profile"] == "paper")]
    out = done.assign(measured_hours=done["train_seconds"] / 3600)
    return out[["method", "arch", "sigma", "teacher_arch", "measured_hours"]].groupby(
        ["method", "arch", "sigma", "teacher_arch"], as_index=False).last()


def slowdown_table(store: ResultsStore) -> pd.DataFrame:
    """One row per (device, arch, sigma, method[, teacher]) with ratios to that arch's Gaussian row."""
    t = latest_timings(store)
    if t.empty:
        return t
    measured = measured_hours(store)
    t = t.merge(measured, on=["method", "arch", "sigma", "teacher_arch"], how="left")
    t["hours"] = t["measured_hours"].where(t["measured_hours"].notna(), t["recipe_hours"])
    t["hours_kind"] = t["measured_hours"].notna().map({True: "measured", False: "projected"})
    base = t[t["method"] == "gaussian"].set_index(["device", "arch", "sigma"])
    rows = []
    for _, r in t.iterrows():
        key = (r["device"], r["arch"], r["sigma"])
        if key not in base.index:
            continue
        g = base.loc[key]
        rows.append({
            "device": r["device"], "arch": r["arch"], "sigma": r["sigma"], "method": r["method"],
            "teacher": r["teacher_arch"], "batch": int(r["batch_size"]),
            "fwd_bwd_passes": r["fwd_bwd_passes"], "fwd_only_passes": r["fwd_only_passes"],
            "epoch_seconds": r["epoch_seconds"], "epoch_ratio": r["epoch_seconds"] / g["epoch_seconds"],
            "epochs": int(r["recipe_epochs"]), "hours": r["hours"], "hours_kind": r["hours_kind"],
            "recipe_ratio": r["hours"] / g["hours"],
            "paper_ratio_resnet110": PAPER_SLOWDOWN.get(r["method"], float("nan")),
            "precision": r["precision"],
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["order"] = df["method"].map({m: i for i, m in enumerate(METHOD_ORDER)}).fillna(len(METHOD_ORDER))
    return df.sort_values(["device", "arch", "sigma", "order", "teacher"]).drop(columns="order").reset_index(drop=True)


def slowdown_markdown(df: pd.DataFrame) -> str:
    """The table as markdown, one section per (device, arch, sigma)."""
    lines = []
    for (device, arch, sigma), part in df.groupby(["device", "arch", "sigma"], sort=False):
        lines += [f"### {arch}, sigma {sigma:g} — {device}", "",
                  "| method | teacher | batch | fwd+bwd passes | fwd-only passes | epoch (s) | epoch x | epochs "
                  "| hours | recipe x | paper x (ResNet-110) |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in part.iterrows():
            paper = "" if pd.isna(r["paper_ratio_resnet110"]) else f"{r['paper_ratio_resnet110']:.2f}"
            kind = "" if r["hours_kind"] == "measured" else " (projected)"
            lines.append(f"| {r['method']} | {r['teacher'] or ''} | {r['batch']} | {r['fwd_bwd_passes']:.2f} | "
                         f"{r['fwd_only_passes']:.2f} | {r['epoch_seconds']:.1f} | {r['epoch_ratio']:.2f} | "
                         f"{r['epochs']} | {r['hours']:.3g}{kind} | {r['recipe_ratio']:.2f} | {paper} |")
        lines.append("")
    lines.append("fwd+bwd passes: forward+backward passes over the loader batch's images per loader batch; "
                 "fwd-only: forward passes without gradient (CRT's teacher). Hours are measured from full runs "
                 "where they exist, else projected from timing probes (epoch time x the recipe's epochs).")
    return "\n".join(lines) + "\n"
