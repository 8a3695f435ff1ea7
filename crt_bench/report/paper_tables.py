"""The ACR comparison table and the paper's Table 1 (proxy-teacher CRT vs SmoothMix), from the store.

Everything is derived from per-image ``certify`` rows (:mod:`crt_bench.metrics`) and the ``runs``
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

from crt_bench.archs import get_arch
from crt_bench.errors import CrtBenchError
from crt_bench.metrics import acr, certified_accuracy
from crt_bench.results import ResultsStore
from crt_bench.tf32 import device_label
from crt_bench.uncertainty import acr_interval, certified_accuracy_intervals

IMPORT_PREFIX = "import:"
TABLE_RADII: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
METHOD_ORDER = ["gaussian", "crt", "consistency", "smoothmix", "macer", "smoothadv"]
METHOD_LABELS = {"gaussian": "Gaussian", "crt": "CRT", "consistency": "Consistency", "smoothmix": "SmoothMix",
                 "macer": "MACER", "smoothadv": "SmoothAdv"}

# The paper's Table 1 (the authors' poster): CIFAR-10, ResNet-110, one V100, sigma not stated (0.25 assumed).
PAPER_TABLE1 = {
    "arch": "resnet110",
    "dataset": "cifar10",
    "setting": "ResNet-110 on CIFAR-10, one V100",
    "smoothmix": {"hours": 18.98, "acr": 0.550},
    "crt": {"hours": 10.07, "acr": 0.540, "teacher_arch": "resnet20"},
}
PAPER_SPEEDUP = PAPER_TABLE1["smoothmix"]["hours"] / PAPER_TABLE1["crt"]["hours"]

ACR_COLUMNS = ["method", "teacher", "teacher_method", "arch", "sigma", "dataset", "N", "images", "ACR", "ACR_low",
               "ACR_high",
               *[f"acc@{r:.2f}" for r in TABLE_RADII], *[f"acc@{r:.2f}_{end}" for r in TABLE_RADII for end in ("low", "high")],
               "train_hours", "hours_kind", "profile", "device",
               "run_id", "cert_id"]
TABLE1_COLUMNS = ["row", "method", "arch", "teacher", "sigma", "dataset", "profile", "device", "N", "images",
                  "student_hours", "teacher_hours", "hours", "ACR", "speedup", "paper_hours", "paper_ACR",
                  "paper_speedup", "paper_setting", "run_id", "cert_id"]


# -- selection -----------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    try:
        return bool(value) and not (isinstance(value, float) and math.isnan(value))
    except (TypeError, ValueError):
        return False


def method_label(method: str, teacher: str = "", teacher_method: str = "") -> str:
    """The display name of a line or row: ``SmoothMix``, ``CRT (teacher resnet20)``, ..."""
    name = METHOD_LABELS.get(method, method)
    if method != "crt":
        return name
    detail = teacher or "unknown"
    if teacher_method and teacher_method != "smoothmix":
        detail += f", {teacher_method}-trained"
    return f"{name} (teacher {detail})"


def certifications(store: ResultsStore, certify: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The newest certification per run id, with its run's columns; and the per-image rows per cert id.

    Returns ``(meta, rows)``. ``meta`` has one row per selected certification: ``cert_id, run_id,
    imported, time, sigma, N, images`` and, from the run (empty/NaN for imported logs and for
    certifications of models that are not runs of this store), ``method, arch, dataset, teacher
    (the teacher's arch), teacher_method (looked up from the teacher run, "" if unknown),
    teacher_run_id, teacher_dedicated, train_seconds, teacher_train_seconds, total_train_seconds,
    hours (total_train_seconds when present, else train_seconds, / 3600), profile, device (with the
    TF32 state on a GPU, :func:`~crt_bench.tf32.device_label`; ``cert_device`` likewise),
    git_commit, status``. ``rows[cert_id]`` is that certification's per-image frame.
    """
    certs = store.read("certify") if certify is None else certify
    if certs.empty:
        return pd.DataFrame(columns=["cert_id", "run_id", "imported"]), {}
    runs = store.runs()
    run_by_id = {r["run_id"]: r for r in runs.to_dict("records")} if not runs.empty else {}
    order = certs.assign(_order=np.arange(len(certs)))
    heads = []
    rows: dict[str, pd.DataFrame] = {}
    for cert_id, part in order.groupby("cert_id", sort=False):
        first = part.iloc[0]
        heads.append({"cert_id": cert_id, "run_id": first["run_id"], "time": _text(first.get("time")),
                      "_order": int(part["_order"].max())})
        rows[cert_id] = part.drop(columns="_order")
    head = pd.DataFrame(heads).sort_values(["time", "_order"], kind="stable")
    newest = head.groupby("run_id", sort=False).tail(1)
    out = []
    for _, h in newest.iterrows():
        part = rows[h["cert_id"]]
        run = run_by_id.get(h["run_id"])
        record: dict[str, Any] = {
            "cert_id": h["cert_id"], "run_id": h["run_id"], "imported": str(h["run_id"]).startswith(IMPORT_PREFIX),
            "time": h["time"], "_order": h["_order"],
            "sigma": _number(part["sigma"].iloc[0]) if "sigma" in part else float("nan"),
            "N": int(part["n"].iloc[0]) if "n" in part and not pd.isna(part["n"].iloc[0]) else -1,
            "images": len(part),
            "cert_device": (device_label(_text(part["device"].iloc[0]), part["tf32"].iloc[0] if "tf32" in part else None)
                            if "device" in part else ""),
            "cert_git_commit": _text(part["git_commit"].iloc[0]) if "git_commit" in part else "",
        }
        run = run or {}
        teacher_run = run_by_id.get(_text(run.get("teacher_run_id")), {})
        train_s = _number(run.get("train_seconds"))
        total_s = _number(run.get("total_train_seconds"))
        record.update({
            "method": _text(run.get("method")), "arch": _text(run.get("arch")), "dataset": _text(run.get("dataset")),
            "teacher": _text(run.get("teacher_arch")), "teacher_method": _text(teacher_run.get("method")),
            "teacher_run_id": _text(run.get("teacher_run_id")), "teacher_dedicated": _flag(run.get("teacher_dedicated")),
            "train_seconds": train_s, "teacher_train_seconds": _number(run.get("teacher_train_seconds")),
            "teacher_run_train_seconds": _number(teacher_run.get("train_seconds")),
            "total_train_seconds": total_s,
            "hours": (total_s if not math.isnan(total_s) else train_s) / 3600,
            "profile": _text(run.get("profile")), "device": device_label(_text(run.get("device")), run.get("tf32")),
            "git_commit": _text(run.get("git_commit")), "status": _text(run.get("status")),
        })
        if math.isnan(record["sigma"]) and run:
            record["sigma"] = _number(run.get("sigma"))
        out.append(record)
    meta = pd.DataFrame(out).sort_values(["time", "_order"], kind="stable").drop(columns="_order")
    return meta.reset_index(drop=True), rows


def newest_per_line(meta: pd.DataFrame) -> pd.DataFrame:
    """Trained runs only, the newest certification per (method, teacher, teacher_method, arch, sigma, dataset, profile)."""
    if meta.empty or "method" not in meta:
        return meta.iloc[0:0]
    ours = meta[~meta["imported"] & (meta["method"] != "")]
    keys = ["method", "teacher", "teacher_method", "arch", "sigma", "dataset", "profile"]
    return ours.groupby(keys, sort=False, dropna=False).tail(1).reset_index(drop=True)


def arch_generation(arch: str) -> int:
    """The architecture's release year (registry), for ordering; unknown names sort last."""
    try:
        return get_arch(arch).generation
    except CrtBenchError:
        return 10_000


def _method_rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)


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
            "method": m["method"], "teacher": m["teacher"], "teacher_method": m["teacher_method"], "arch": m["arch"],
            "sigma": m["sigma"], "dataset": m["dataset"], "N": m["N"], "images": m["images"], "ACR": acr(part),
            "ACR_low": interval.low, "ACR_high": interval.high,
            **{f"acc@{r:.2f}": float(v) for r, v in acc.items()},
            **{f"acc@{r:.2f}_{end}": float(bands.loc[float(r), end]) for r in TABLE_RADII for end in ("low", "high")},
            "train_hours": m["hours"], "hours_kind": "measured" if not math.isnan(m["hours"]) else "unknown",
            "profile": m["profile"], "device": m["device"], "run_id": m["run_id"], "cert_id": m["cert_id"],
        })
    df = pd.DataFrame(out, columns=ACR_COLUMNS)
    df["_rank"] = df["method"].map(_method_rank)
    df["_generation"] = df["arch"].map(arch_generation)
    df = df.sort_values(["profile", "dataset", "_generation", "arch", "sigma", "_rank", "teacher"], kind="stable")
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
    lines = ["| method | arch | sigma | dataset | N | images | ACR [95% CI] | "
             + " | ".join(f"acc@{float(c[4:]):g}" for c in acc_cols) + " | train h | profile | device |",
             "|---|---|---|---|---|---|---|" + "---|" * len(acc_cols) + "---|---|---|"]
    for _, r in df.iterrows():
        lines.append(
            f"| {method_label(r['method'], r['teacher'], r['teacher_method'])} | {r['arch']} | {r['sigma']:g} | "
            f"{r['dataset']} | {r['N']} | {r['images']} | {r['ACR']:.3f} [{r['ACR_low']:.3f}, {r['ACR_high']:.3f}] | "
            + " | ".join(_with_band(r, c) for c in acc_cols)
            + f" | {_fmt(r['train_hours'], '.4g')} | {r['profile']} | {r['device']} |")
    lines += ["", ("ACR and certified accuracy are fractions over all certified images (abstentions and wrong "
                   "predictions count 0); the intervals are 95% percentile bootstraps over the images. "
                   "Training hours are measured wall-clock of the run, including a dedicated "
                   "proxy teacher's training where the run records one.")]
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

    def base(m: pd.Series, label: str) -> dict[str, Any]:
        part = rows[m["cert_id"]]
        return {"row": label, "method": m["method"], "arch": m["arch"], "teacher": m["teacher"], "sigma": m["sigma"],
                "dataset": m["dataset"], "profile": m["profile"], "device": m["device"], "N": m["N"],
                "images": m["images"], "ACR": acr(part), "paper_setting": PAPER_TABLE1["setting"],
                "run_id": m["run_id"], "cert_id": m["cert_id"]}

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
    lines = ["| model | our hours | our ACR | paper hours | paper ACR |", "|---|---|---|---|---|"]
    for _, r in df.iterrows():
        lines.append(f"| {r['row']} | {_fmt(r['hours'], '.4g')} | {r['ACR']:.3f} | {r['paper_hours']:.2f} | "
                     f"{r['paper_ACR']:.3f} |")
    crt = df[df["method"] == "crt"].iloc[0]
    lines.append(f"| speed-up (SmoothMix h / CRT h) | {_fmt(crt['speedup'], '.2f')}x | | "
                 f"{crt['paper_speedup']:.2f}x | |")
    lines += ["", f"CRT hours = student {_fmt(crt['student_hours'], '.4g')} h + proxy teacher "
              f"{_fmt(crt['teacher_hours'], '.4g')} h"
              + (" (the teacher's training hours are not in the store)" if math.isnan(crt["teacher_hours"]) else "")
              + f". Ours: {crt['arch']}, sigma {crt['sigma']:g}, {crt['dataset']}, profile {crt['profile']}, "
              f"{crt['device']}, N={crt['N']}, {crt['images']} images. Paper: {PAPER_TABLE1['setting']}."]
    if crt["arch"] != PAPER_TABLE1["arch"] or crt["dataset"] != PAPER_TABLE1["dataset"] or crt["profile"] != "paper":
        lines.append("Our setting differs from the paper's: compare the speed-up ratio and the ACR gap, "
                     "not absolute hours or ACR.")
    return "\n".join(lines) + "\n"


__all__ = ["PAPER_SPEEDUP", "PAPER_TABLE1", "TABLE_RADII", "acr_markdown", "acr_table", "arch_generation", "certifications",
           "method_label", "newest_per_line", "table1", "table1_markdown"]
