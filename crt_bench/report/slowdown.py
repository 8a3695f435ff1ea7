"""The slowdown table: each method's training cost relative to Gaussian training of the same network.

Built from the ``timing`` table (projected from probes) and, where a full paper-recipe run finished,
the ``runs`` table (measured). The paper's whole-run ratios for ResNet-110 (CRT paper, Table 1;
one V100) stand beside ours.
"""
from __future__ import annotations

import pandas as pd

from crt_bench.core.states import RunStatus
from crt_bench.core.tf32 import device_labels
from crt_bench.store.query import newest
from crt_bench.report.markdown import markdown_table
from crt_bench.store.store import ResultsStore

PAPER_SLOWDOWN = {"smoothadv": 46.20, "macer": 20.86, "smoothmix": 4.97}
METHOD_ORDER = ["gaussian", "crt", "consistency", "smoothmix", "macer", "smoothadv"]


PROFILE_RANK = {"paper": 0, "cpu-full": 1, "cpu": 1, "smoke": 2}  # larger probes measure better


def latest_timings(store: ResultsStore) -> pd.DataFrame:
    """Per (method, arch, teacher, sigma, device): the newest probe of the largest probe profile.

    ``device`` carries the probe's TF32 state on a GPU ("NVIDIA H200 (tf32 off)", :func:`device_label`):
    probes with TF32 on and off are different rows, never divided by each other.
    """
    df = store.read("timing")
    if df.empty:
        return df
    df = df.assign(device=device_labels(df))
    keys = ["method", "arch", "teacher_arch", "sigma", "device"]
    rank = df["profile"].map(PROFILE_RANK).fillna(len(PROFILE_RANK)) if "profile" in df else 0
    return newest(df.assign(_rank=-rank), keys, order=["_rank", "time"]).drop(columns="_rank").reset_index(drop=True)


MEASURED_KEYS = ["method", "arch", "sigma", "teacher_arch", "device"]


def measured_hours(store: ResultsStore) -> pd.DataFrame:
    """Finished paper-profile runs: (method, arch, sigma, teacher_arch, device) -> measured training hours.

    ``device`` is labelled as the timing rows' are (:func:`device_labels`): a run's hours stand beside the
    probes of the device it ran on only, never another's.
    """
    runs = store.runs()
    if runs.empty:
        return pd.DataFrame(columns=[*MEASURED_KEYS, "measured_hours"])
    done = runs[(runs["status"] == RunStatus.FINISHED) & (runs["profile"] == "paper")]
    if done.empty:
        return pd.DataFrame(columns=[*MEASURED_KEYS, "measured_hours"])
    devices = device_labels(done) if "device" in done else [""] * len(done)  # no device recorded: matches no probe
    out = done.assign(measured_hours=done["train_seconds"] / 3600, device=devices)
    return out[[*MEASURED_KEYS, "measured_hours"]].groupby(MEASURED_KEYS, as_index=False).last()


WIDE_RELATIVE = 0.3  # a ratio whose interval is wider than this fraction of the ratio is flagged


def _col(r: pd.Series, name: str) -> float:
    value = r.get(name, float("nan"))
    return float(value) if value is not None and not pd.isna(value) else float("nan")


def _per_batch(r: pd.Series) -> float:
    """Seconds per loader batch (older rows: epoch seconds over the batches of a CIFAR-10 epoch)."""
    value = _col(r, "seconds_per_batch")
    return value if not pd.isna(value) else r["epoch_seconds"] / -(-50_000 // int(r["batch_size"]))


OUTWORK_FACTOR = 2.0  # between two robust methods, this many times the passes must take longer


def dominates(a: pd.Series, b: pd.Series) -> bool:
    """``a`` must take longer per loader batch than ``b``: against Gaussian (one pass), any method that
    does strictly more (its own pass plus more); between two other methods, one with at least
    :data:`OUTWORK_FACTOR` times the back-propagated passes and no fewer forward-only ones. The factor
    leaves room for batching: MACER's 16 noisy copies in one batch may well beat SmoothMix's 12
    sequential attack passes. Forward-only passes compare within one teacher, or against none."""
    if not (a["teacher"] == b["teacher"] or b["fwd_only_passes"] == 0):
        return False
    ge = a["fwd_bwd_passes"] >= b["fwd_bwd_passes"] and a["fwd_only_passes"] >= b["fwd_only_passes"]
    if b["method"] == "gaussian":
        return ge and (a["fwd_bwd_passes"] > b["fwd_bwd_passes"] or a["fwd_only_passes"] > b["fwd_only_passes"])
    return ge and a["fwd_bwd_passes"] >= OUTWORK_FACTOR * b["fwd_bwd_passes"]


def _same_images(row: dict) -> float:
    """The ratio over the same images: per epoch where the table has it (the passes count each loader batch's
    images, and recipes' batches differ on a GPU: MACER's 64 against 256), per batch otherwise."""
    epoch = row.get("epoch_ratio", float("nan"))
    return row["batch_ratio"] if pd.isna(epoch) else epoch


def ratio_flags(part: pd.DataFrame, wide: float = WIDE_RELATIVE) -> list[str]:
    """Why each row's ratio cannot be trusted ("" when nothing is wrong), for one (device, arch, sigma).

    ``part`` has ``method, teacher, fwd_bwd_passes, fwd_only_passes, batch_ratio, batch_ratio_low,
    batch_ratio_high``: flagged are an interval wider than ``wide`` x the ratio, a ratio without an
    interval (timed apart, not interleaved), and a method measured faster per batch than one it
    out-works (:func:`dominates`) — physically impossible, so the machine's load decided it.
    """
    rows = list(part.to_dict("records"))
    out = []
    for a in rows:
        why = []
        low, high, ratio = a["batch_ratio_low"], a["batch_ratio_high"], a["batch_ratio"]
        if a["method"] != "gaussian":
            if pd.isna(low) or pd.isna(high):
                why.append("timed apart (no interval)")
            elif ratio > 0 and (high - low) / ratio > wide:
                why.append(f"wide interval (±{(high - low) / 2 / ratio:.0%})")
        faster = [b["method"] + (f" <- {b['teacher']}" if b["teacher"] else "") for b in rows
                  if b is not a and dominates(pd.Series(a), pd.Series(b)) and _same_images(a) < _same_images(b)]
        if faster:
            why.append(f"faster than {', '.join(faster)} despite more passes")
        out.append("; ".join(why))
    return out


def slowdown_table(store: ResultsStore) -> pd.DataFrame:
    """One row per (device, arch, sigma, method[, teacher]) with ratios to that arch's Gaussian row.

    Interleaved probes (:mod:`crt_bench.timing.rounds`) bring their own per-round ratios and intervals
    (``*_low``/``*_high``); probes timed apart get the quotient of medians and no interval. ``flag``
    says why a ratio cannot be trusted (:func:`ratio_flags`).
    """
    t = latest_timings(store)
    if t.empty:
        return t
    measured = measured_hours(store)
    t = t.merge(measured, on=MEASURED_KEYS, how="left")
    t["hours"] = t["measured_hours"].where(t["measured_hours"].notna(), t["recipe_hours"])
    t["hours_kind"] = t["measured_hours"].notna().map({True: "measured", False: "projected"})
    base = t[t["method"] == "gaussian"].set_index(["device", "arch", "sigma"])
    rows = []
    for _, r in t.iterrows():
        key = (r["device"], r["arch"], r["sigma"])
        if key not in base.index:
            continue
        g = base.loc[key]
        flag = r.get("interleaved", False)
        interleaved = (not pd.isna(flag)) and bool(flag) and not pd.isna(_col(r, "batch_ratio"))
        if interleaved:
            batch = (_col(r, "batch_ratio"), _col(r, "batch_ratio_low"), _col(r, "batch_ratio_high"))
            epoch = (_col(r, "epoch_ratio"), _col(r, "epoch_ratio_low"), _col(r, "epoch_ratio_high"))
        else:
            quotient = _per_batch(r) / _per_batch(g)
            batch = (quotient, float("nan"), float("nan"))
            epoch = (r["epoch_seconds"] / g["epoch_seconds"], float("nan"), float("nan"))
        epochs = int(r["recipe_epochs"]) / int(g["recipe_epochs"])
        if r["hours_kind"] == "measured" and g["hours_kind"] == "measured":  # never measured over projected
            recipe = (r["hours"] / g["hours"], float("nan"), float("nan"))
        else:
            recipe = tuple(v * epochs for v in epoch)
        rows.append({
            "device": r["device"], "arch": r["arch"], "sigma": r["sigma"], "method": r["method"],
            "teacher": r["teacher_arch"], "batch": int(r["batch_size"]),
            "fwd_bwd_passes": r["fwd_bwd_passes"], "fwd_only_passes": r["fwd_only_passes"],
            "batch_ratio": batch[0], "batch_ratio_low": batch[1], "batch_ratio_high": batch[2],
            "epoch_seconds": r["epoch_seconds"], "epoch_ratio": epoch[0], "epoch_ratio_low": epoch[1],
            "epoch_ratio_high": epoch[2],
            "epochs": int(r["recipe_epochs"]), "hours": r["hours"], "hours_kind": r["hours_kind"],
            "hours_low": g["hours"] * recipe[1], "hours_high": g["hours"] * recipe[2],
            "recipe_ratio": recipe[0], "recipe_ratio_low": recipe[1], "recipe_ratio_high": recipe[2],
            "rounds": int(_col(r, "rounds")) if interleaved else 0,
            "paper_ratio_resnet110": PAPER_SLOWDOWN.get(r["method"], float("nan")),
            "precision": r["precision"],
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["flag"] = ""
    for _, part in df.groupby(["device", "arch", "sigma"], sort=False):
        df.loc[part.index, "flag"] = ratio_flags(part)
    df["order"] = df["method"].map({m: i for i, m in enumerate(METHOD_ORDER)}).fillna(len(METHOD_ORDER))
    return df.sort_values(["device", "arch", "sigma", "order", "teacher"]).drop(columns="order").reset_index(drop=True)


def _with_interval(value: float, low: float, high: float) -> str:
    return f"{value:.2f}" if pd.isna(low) or pd.isna(high) else f"{value:.2f} [{low:.2f}, {high:.2f}]"


SLOWDOWN_HEADER = ("method", "teacher", "batch", "fwd+bwd passes", "fwd-only passes", "epoch (s)", "epoch x [CI]",
                   "epochs", "hours", "recipe x [CI]", "paper x (ResNet-110)", "flag")


def _slowdown_cells(r: pd.Series) -> list[object]:
    paper = "" if pd.isna(r["paper_ratio_resnet110"]) else f"{r['paper_ratio_resnet110']:.2f}"
    kind = "" if r["hours_kind"] == "measured" else " (projected)"
    flag = r.get("flag", "")
    return [r["method"], r["teacher"] or "", r["batch"], f"{r['fwd_bwd_passes']:.2f}", f"{r['fwd_only_passes']:.2f}",
            f"{r['epoch_seconds']:.1f}", _with_interval(r["epoch_ratio"], r["epoch_ratio_low"], r["epoch_ratio_high"]),
            r["epochs"], f"{r['hours']:.3g}{kind}",
            _with_interval(r["recipe_ratio"], r["recipe_ratio_low"], r["recipe_ratio_high"]), paper,
            "⚠ " + flag if flag else ""]


def slowdown_markdown(df: pd.DataFrame) -> str:
    """The table as markdown, one section per (device, arch, sigma); flagged ratios marked ⚠."""
    lines = []
    for (device, arch, sigma), part in df.groupby(["device", "arch", "sigma"], sort=False):
        rounds = sorted({int(x) for x in part.get("rounds", pd.Series([0])) if x})
        how = f"interleaved, {', '.join(map(str, rounds))} rounds" if rounds else "timed apart"
        lines += [f"### {arch}, sigma {sigma:g} — {device} ({how})", "",
                  *markdown_table(SLOWDOWN_HEADER, [_slowdown_cells(r) for _, r in part.iterrows()]), ""]
    lines.append("fwd+bwd passes: forward+backward passes over the loader batch's images per loader batch; "
                 "fwd-only: forward passes without gradient (CRT's teacher). Hours are measured from full runs "
                 "on the same device where they exist, else projected from timing probes (epoch time x the "
                 "recipe's epochs); the recipe ratio divides measured by measured hours only, else projected by "
                 "projected. "
                 "Interleaved probes time an architecture's methods round-robin in one process; a ratio is the "
                 "median over rounds of the same-round ratio to Gaussian, its CI a distribution-free interval for "
                 "that median (order statistics of the rounds). ⚠ marks a ratio that cannot be trusted: a wide "
                 f"interval (wider than {WIDE_RELATIVE:.0%} of the ratio), no interval, or a method measured faster "
                 "than one it out-works (more passes than Gaussian's one, or at least "
                 f"{OUTWORK_FACTOR:g}x another method's passes: impossible, the machine's load decided it).")
    return "\n".join(lines) + "\n"
