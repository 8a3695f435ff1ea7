"""The ACR comparison table and the paper's Table 1 (proxy-teacher CRT vs SmoothMix), from the store.

Everything is derived from per-image ``certify`` rows (:mod:`crt_bench.analysis.metrics`) and the ``runs``
table; nothing here stores a metric.

* :func:`certifications` — the newest certification of every run (and every imported log), with the
  run's columns beside it: the shared selection step of these tables and of Figure 2.
* :func:`acr_table` — one row per (method, teacher, architecture, sigma, dataset, profile): ACR,
  certified accuracy on the radius grid, training hours (measured wall-clock of the run, including a
  dedicated teacher's training when the run records it), profile and device.
* :func:`table1` — the paper's Table 1: SmoothMix <arch> vs CRT <arch> with a proxy teacher, hours and
  ACR beside the published 18.98 h / 0.550 and 10.07 h / 0.540 (ResNet-110, CIFAR-10, one V100).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from crt_bench.analysis.matching import certification_key, describe_key, radius_cap
from crt_bench.analysis.metrics import acr, certified_accuracy
from crt_bench.analysis.select import _method_rank, arch_generation, certifications, method_label, newest_per_line
from crt_bench.analysis.uncertainty import acr_interval, certified_accuracy_intervals
from crt_bench.core.constants import TABLE_RADII
from crt_bench.report.markdown import markdown_table
from crt_bench.store.store import ResultsStore

# The paper's Table 1 (the authors' poster): CIFAR-10, ResNet-110, one V100, sigma not stated (0.25 assumed).
PAPER_TABLE1 = {
    "arch": "resnet110",
    "dataset": "cifar10",
    "setting": "ResNet-110 on CIFAR-10, one V100",
    "smoothmix": {"hours": 18.98, "acr": 0.550},
    "crt": {"hours": 10.07, "acr": 0.540, "teacher_arch": "resnet20"},
}
PAPER_SPEEDUP = PAPER_TABLE1["smoothmix"]["hours"] / PAPER_TABLE1["crt"]["hours"]

ACR_COLUMNS = ["method", "variant", "teacher", "teacher_method", "arch", "sigma", "dataset", "N", "images", "ACR", "ACR_low",
               "ACR_high",
               *[f"acc@{r:.2f}" for r in TABLE_RADII], *[f"acc@{r:.2f}_{end}" for r in TABLE_RADII for end in ("low", "high")],
               "train_hours", "hours_basis", "profile", "device",
               "run_id", "cert_id", "certification"]
TABLE1_COLUMNS = ["row", "method", "arch", "teacher", "sigma", "dataset", "profile", "device", "N", "images",
                  "student_hours", "teacher_hours", "hours", "ACR", "speedup", "paper_hours", "paper_ACR",
                  "paper_speedup", "paper_setting", "run_id", "cert_id", "certification", "seed", "status"]


# -- the ACR table ---------------------------------------------------------------------------------------
def acr_table(store: ResultsStore) -> pd.DataFrame:
    """Method x architecture: ACR, certified accuracy at 0/0.25/0.5/0.75/1.0, training hours, profile, device.

    One row per (method, teacher, arch, sigma, dataset, profile), from the newest certification among
    that group's runs. ``train_hours`` is the run's ``total_train_seconds`` (its own training plus a
    dedicated teacher's) when recorded, else ``train_seconds``; always measured wall-clock.
    """
    meta, rows = certifications(store)
    lines = newest_per_line(meta)
    if lines.empty:
        return pd.DataFrame(columns=ACR_COLUMNS)
    out = []
    for _, m in lines.iterrows():
        part = rows[m["cert_id"]]
        acc = certified_accuracy(part, TABLE_RADII)
        interval = acr_interval(part)
        bands = certified_accuracy_intervals(part, TABLE_RADII).set_index("radius")
        out.append({
            "method": m["method"], "variant": m.get("variant", ""), "teacher": m["teacher"],
            "teacher_method": m["teacher_method"], "arch": m["arch"],
            "sigma": m["sigma"], "dataset": m["dataset"], "N": m["N"], "images": m["images"], "ACR": acr(part),
            "ACR_low": interval.low, "ACR_high": interval.high,
            **{f"acc@{r:.2f}": float(v) for r, v in acc.items()},
            **{f"acc@{r:.2f}_{end}": float(bands.loc[float(r), end]) for r in TABLE_RADII for end in ("low", "high")},
            "train_hours": m["hours"], "hours_basis": "measured" if not math.isnan(m["hours"]) else "unknown",
            "profile": m["profile"], "device": m["device"], "run_id": m["run_id"], "cert_id": m["cert_id"],
            "certification": describe_key(certification_key(part), float(m["sigma"])),
        })
    df = pd.DataFrame(out, columns=ACR_COLUMNS)
    df["_rank"] = df["method"].map(_method_rank)
    df["_generation"] = df["arch"].map(arch_generation)
    df = df.sort_values(["profile", "dataset", "_generation", "arch", "sigma", "_rank", "variant", "teacher"],
                        kind="stable")
    return df.drop(columns=["_rank", "_generation"]).reset_index(drop=True)


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return format(value, spec)


def _with_band(r: pd.Series, column: str) -> str:
    low, high = r.get(f"{column}_low"), r.get(f"{column}_high")
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{r[column]:.3f}"
    return f"{r[column]:.2f} [{low:.2f}, {high:.2f}]"


def acr_markdown(df: pd.DataFrame) -> str:
    if df.empty:
        return "No data: no certified training run in the store (`crt-bench certify RUN_ID` first).\n"
    acc_cols = [c for c in df.columns if c.startswith("acc@") and not c.endswith(("_low", "_high"))]
    head = ["method", "arch", "sigma", "dataset", "N", "images", "ACR [95% CI]",
            *[f"acc@{float(c[4:]):g}" for c in acc_cols], "train h", "profile", "device", "certification"]
    lines = markdown_table(head, [
        [method_label(r["method"], r["teacher"], r["teacher_method"], r.get("variant", "")), r["arch"], f"{r['sigma']:g}", r["dataset"],
         r["N"], r["images"], f"{r['ACR']:.3f} [{r['ACR_low']:.3f}, {r['ACR_high']:.3f}]",
         *[_with_band(r, c) for c in acc_cols], _fmt(r["train_hours"], ".4g"), r["profile"], r["device"],
         r.get("certification", "")] for _, r in df.iterrows()])
    lines += ["", ("ACR and certified accuracy are fractions over all certified images (abstentions and wrong "
                   "predictions count 0); the intervals are 95% percentile bootstraps over the images. "
                   "Training hours are measured wall-clock of the run, including a dedicated "
                   "proxy teacher's training where the run records one. \"radius cap\": the largest radius "
                   "CERTIFY can give at that N and alpha, sigma * Phi^-1(alpha^(1/N)) (0.7996 at N=10,000, "
                   "alpha=0.001, sigma=0.25; 0.953 at the papers' N=100,000): no image certifies beyond it, so "
                   "certified accuracy above it is 0 and ACR is truncated.")]
    return "\n".join(lines) + "\n"


# -- Table 1 ----------------------------------------------------------------------------------------------
def _teacher_seconds(m: pd.Series) -> float:
    own = m["teacher_train_seconds"]
    return own if not math.isnan(own) else m["teacher_run_train_seconds"]


def _proxy_crt(meta: pd.DataFrame) -> pd.DataFrame:
    crt = meta[(meta["method"] == "crt")]
    qualifies = crt["teacher_dedicated"] | (crt["teacher_method"] == "smoothmix")
    return crt[qualifies]


def table1(store: ResultsStore, arch: str | None = None, sigma: float | None = None) -> pd.DataFrame:
    """The paper's Table 1: SmoothMix <arch> vs CRT <arch> with a proxy teacher, ours beside the paper's.

    A CRT run qualifies when its teacher was dedicated to it (``teacher_dedicated``) or its
    ``teacher_run_id`` names a SmoothMix run in the store; its hours are its own plus the teacher's.
    The pair must share arch, sigma, dataset and profile. Chosen automatically: resnet110 first, then
    the paper profile, then sigma 0.25, then the CRT run with a resnet20 teacher, then one whose teacher
    arch differs from the student's, then the newest.
    Rows: SmoothMix, CRT; ``speedup`` (SmoothMix hours / CRT hours) and ``paper_speedup`` on the CRT row.
    Empty (with the columns) when no pair exists.
    """
    meta, rows = certifications(store)
    if meta.empty or "method" not in meta:
        return pd.DataFrame(columns=TABLE1_COLUMNS)
    meta = meta[~meta["imported"]].reset_index(drop=True)
    meta["_pos"] = np.arange(len(meta))  # newest last
    smoothmix = meta[meta["method"] == "smoothmix"]
    crt = _proxy_crt(meta)
    if arch is not None:
        smoothmix, crt = smoothmix[smoothmix["arch"] == arch], crt[crt["arch"] == arch]
    if sigma is not None:
        smoothmix = smoothmix[np.isclose(smoothmix["sigma"], sigma)]
        crt = crt[np.isclose(crt["sigma"], sigma)]
    pairs = []
    for _, c in crt.iterrows():
        match = smoothmix[(smoothmix["arch"] == c["arch"]) & (smoothmix["dataset"] == c["dataset"])
                          & (smoothmix["profile"] == c["profile"]) & np.isclose(smoothmix["sigma"], c["sigma"])]
        if match.empty:
            continue
        s = match.iloc[-1]
        rank = (c["arch"] != PAPER_TABLE1["arch"], c["profile"] != "paper", not np.isclose(c["sigma"], 0.25),
                c["teacher"] != PAPER_TABLE1["crt"]["teacher_arch"], c["teacher"] == c["arch"], -int(c["_pos"]))
        pairs.append((rank, s, c))
    if not pairs:
        return pd.DataFrame(columns=TABLE1_COLUMNS)
    _, s, c = min(pairs, key=lambda p: p[0])
    states = store.certification_states()
    status_of = dict(zip(states["cert_id"], states["status"])) if not states.empty else {}

    def base(m: pd.Series, label: str) -> dict[str, Any]:
        part = rows[m["cert_id"]]
        return {"row": label, "method": m["method"], "arch": m["arch"], "teacher": m["teacher"], "sigma": m["sigma"],
                "dataset": m["dataset"], "profile": m["profile"], "device": m["device"], "N": m["N"],
                "images": m["images"], "ACR": acr(part), "paper_setting": PAPER_TABLE1["setting"],
                "run_id": m["run_id"], "cert_id": m["cert_id"],
                "certification": describe_key(certification_key(part), float(m["sigma"])),
                "seed": m["seed"], "status": str(status_of.get(m["cert_id"], "finished"))}

    s_row = base(s, f"SmoothMix {s['arch']}")
    s_row.update(student_hours=s["hours"], teacher_hours=float("nan"), hours=s["hours"], speedup=float("nan"),
                 paper_hours=PAPER_TABLE1["smoothmix"]["hours"], paper_ACR=PAPER_TABLE1["smoothmix"]["acr"],
                 paper_speedup=float("nan"))
    teacher_h = _teacher_seconds(c) / 3600
    student_h = c["train_seconds"] / 3600
    c_row = base(c, f"CRT {c['arch']} with {c['teacher'] or 'unknown'} proxy teacher")
    c_row.update(student_hours=student_h, teacher_hours=teacher_h, hours=student_h + teacher_h,
                 paper_hours=PAPER_TABLE1["crt"]["hours"], paper_ACR=PAPER_TABLE1["crt"]["acr"],
                 paper_speedup=PAPER_SPEEDUP)
    c_row["speedup"] = s_row["hours"] / c_row["hours"] if c_row["hours"] > 0 else float("nan")
    return pd.DataFrame([s_row, c_row], columns=TABLE1_COLUMNS)


def table1_markdown(df: pd.DataFrame) -> str:
    paper = (f"paper: SmoothMix {PAPER_TABLE1['smoothmix']['hours']:.2f} h, ACR {PAPER_TABLE1['smoothmix']['acr']:.3f}"
             f"; CRT with a ResNet-20 proxy teacher {PAPER_TABLE1['crt']['hours']:.2f} h, ACR "
             f"{PAPER_TABLE1['crt']['acr']:.3f}; speed-up {PAPER_SPEEDUP:.2f}x ({PAPER_TABLE1['setting']})")
    if df.empty:
        return ("No data: Table 1 needs a certified SmoothMix run and a certified CRT run of the same arch, sigma, "
                f"dataset and profile whose teacher is a dedicated proxy or a SmoothMix run (`crt-bench proxy`); "
                f"{paper}.\n")
    crt = df[df["method"] == "crt"].iloc[0]
    lines = markdown_table(["model", "our hours", "our ACR", "our certification", "paper hours", "paper ACR"], [
        *([r["row"], _fmt(r["hours"], ".4g"), f"{r['ACR']:.3f}", r.get("certification", ""), f"{r['paper_hours']:.2f}",
           f"{r['paper_ACR']:.3f}"] for _, r in df.iterrows()),
        ["speed-up (SmoothMix h / CRT h)", f"{_fmt(crt['speedup'], '.2f')}x", None, None,
         f"{crt['paper_speedup']:.2f}x", None]])
    lines += ["", f"CRT hours = student {_fmt(crt['student_hours'], '.4g')} h + proxy teacher "
              f"{_fmt(crt['teacher_hours'], '.4g')} h"
              + (" (the teacher's training hours are not in the store)" if math.isnan(crt["teacher_hours"]) else "")
              + f". Ours: {crt['arch']}, sigma {crt['sigma']:g}, {crt['dataset']}, profile {crt['profile']}, "
              f"{crt['device']}, N={crt['N']}, {crt['images']} images. Paper: {PAPER_TABLE1['setting']}."]
    if len(set(df["certification"])) > 1:
        lines.append("Missing: a like-for-like ACR comparison: the two certifications differ ("
                     + " vs ".join(df["certification"]) + "); their ACRs are not comparable.")
    if "status" in df and (df["status"] != "finished").any():
        lines.append("Missing: finished certifications: " + ", ".join(
            f"{r['row']} is {r['status']}" for _, r in df.iterrows() if r["status"] != "finished") + ".")
    if "seed" in df and df["seed"].nunique(dropna=False) > 1:
        lines.append("Missing: the same training seed: " + " vs ".join(
            f"{r['row']} seed {r['seed']:g}" for _, r in df.iterrows()) + " (one model each, not a mean over seeds).")
    lines.append(f"The paper certified at N=100,000 (radius cap {radius_cap(0.25, 100_000, 0.001):.3f} at sigma 0.25, "
                 "alpha 0.001): ACRs at a smaller N are truncated at a lower cap.")
    if crt["arch"] != PAPER_TABLE1["arch"] or crt["dataset"] != PAPER_TABLE1["dataset"] or crt["profile"] != "paper":
        lines.append("Our setting differs from the paper's: compare the speed-up ratio and the ACR gap, "
                     "not absolute hours or ACR.")
    return "\n".join(lines) + "\n"
