"""The slowdown table: each method's training cost relative to Gaussian training of the same network.

Built from the ``timing`` table (projected from probes) and, where a full paper-recipe run finished,
the ``runs`` table (measured). The baseline is named: Gaussian training at its recipe (150 epochs, batch
256) timed in the same rounds; where the paper protocol (:mod:`crt_bench.timing.paper`) also timed standard
(noise-free) training at 150 x 256 and at the CRT authors' 200 x 128, the ratios to those stand beside.
The paper's whole-run ratios for ResNet-110 (CRT paper, Table 1: one Volta GPU, fp32, against standard
training) are the last figure. Each (device, arch, sigma, protocol) is a section; a row's configuration
names its hyper-parameters (SmoothAdv's published model), its expected ratio is the one its passes imply.
"""
from __future__ import annotations

import ast

import pandas as pd

from crt_bench.core.errors import CrtBenchError
from crt_bench.core.states import RunStatus
from crt_bench.methods.registry import config_label, get_method
from crt_bench.core.tf32 import device_labels
from crt_bench.store.query import newest
from crt_bench.report.markdown import markdown_table
from crt_bench.store.store import ResultsStore

PAPER_SLOWDOWN = {"smoothadv": 46.20, "macer": 20.86, "smoothmix": 4.97}
METHOD_ORDER = ["gaussian", "crt", "consistency", "smoothmix", "macer", "smoothadv"]


PAPER_BASELINE_FREE = {("smoothadv", "smoothmix"): 9.30, ("macer", "smoothmix"): 4.20}  # 46.20/4.97, 20.86/4.97
STANDARD_RECIPES = ("150x256", "200x128")  # Salman's/Cohen's recipe and the CRT authors' (crt-neurips22)
FORWARD_SHARE = 1 / 3  # a forward-only pass costs about a third of a forward+backward one
LAUNCH_BOUND = 0.5  # kernels busy for less than this share of the wall time: the step waits on launches
PROFILE_RANK = {"paper": 0, "cpu-full": 1, "cpu": 1, "smoke": 2}  # larger probes measure better
PROBE_KEYS = ["method", "arch", "teacher_arch", "sigma", "device", "protocol", "recipe", "hparams"]


def latest_timings(store: ResultsStore) -> pd.DataFrame:
    """Per (method, arch, teacher, sigma, device, protocol, recipe, hyper-parameters): the newest probe of the
    largest probe profile. Rows written before the timing schema's version 3 are the engine protocol's.

    ``device`` carries the probe's TF32 state on a GPU ("NVIDIA H200 (tf32 off)", :func:`device_label`):
    probes with TF32 on and off are different rows, never divided by each other.
    """
    df = store.read("timing")
    if df.empty:
        return df
    df = df.assign(device=device_labels(df))
    for column, default in {"protocol": "engine", "recipe": "", "hparams": "", "config": "", "measure": "",
                            "kernel_busy_fraction": float("nan")}.items():
        df[column] = df[column].fillna(default) if column in df else default
    df["recipe"] = [recipe or _method_recipe(m, e) for recipe, m, e in zip(df["recipe"], df["method"], df["recipe_epochs"])]
    df["config"] = [config or _config_of(m, hp) for config, m, hp in zip(df["config"], df["method"], df["hparams"])]
    keys = PROBE_KEYS
    rank = df["profile"].map(PROFILE_RANK).fillna(len(PROFILE_RANK)) if "profile" in df else 0
    return newest(df.assign(_rank=-rank), keys, order=["_rank", "time"]).drop(columns="_rank").reset_index(drop=True)


MEASURED_KEYS = ["method", "arch", "sigma", "teacher_arch", "device"]


def _method_recipe(method: str, epochs: object) -> str:
    """An older row's recipe: its epochs and the method's recipe batch (the probe's batch is ``batch_size``)."""
    try:
        return f"{int(epochs)}x{get_method(method).recipe.batch_size}"
    except (CrtBenchError, TypeError, ValueError):
        return ""


def _config_of(method: str, hparams: str) -> str:
    """An older row's configuration in words, from its stored hyper-parameters ("" where unreadable)."""
    try:
        return config_label(get_method(method).hparams(**ast.literal_eval(hparams)))
    except (CrtBenchError, TypeError, ValueError, SyntaxError):
        return ""


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
    interval (timed apart, not interleaved), a step measured launch-bound (``kernel_busy_fraction``, from
    torch.profiler on a GPU, below :data:`LAUNCH_BOUND`: its ratio says little of the arithmetic), and a method
    measured faster per batch than one it out-works (:func:`dominates`) — physically impossible, so the
    machine's load decided it.
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
        busy = a.get("kernel_busy_fraction", float("nan"))
        if busy is not None and not pd.isna(busy) and busy < LAUNCH_BOUND:
            why.append(f"launch-bound (GPU kernels busy {busy:.0%} of the wall time)")
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
    t["hours_basis"] = t["measured_hours"].notna().map({True: "measured", False: "projected"})
    group = ["device", "arch", "sigma", "protocol"]
    base = t[t["method"] == "gaussian"].drop_duplicates(group, keep="last").set_index(group)
    rows = []
    for _, r in t.iterrows():
        key = tuple(r[c] for c in group)
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
        if r["hours_basis"] == "measured" and g["hours_basis"] == "measured":  # never measured over projected
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
            "epochs": int(r["recipe_epochs"]), "hours": r["hours"], "hours_basis": r["hours_basis"],
            "hours_low": g["hours"] * recipe[1], "hours_high": g["hours"] * recipe[2],
            "recipe_ratio": recipe[0], "recipe_ratio_low": recipe[1], "recipe_ratio_high": recipe[2],
            "rounds": int(_col(r, "rounds")) if interleaved else 0,
            "paper_ratio_resnet110": PAPER_SLOWDOWN.get(r["method"], float("nan")),
            "precision": r["precision"], "protocol": r["protocol"], "recipe": r["recipe"], "config": r["config"],
            "measure": r["measure"], "kernel_busy_fraction": _col(r, "kernel_busy_fraction"), "time": r["time"],
            "expected_ratio": _cost_units(r) / _cost_units(g) * epochs,
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df["flag"] = ""
    df["ratio_standard_150x256"] = df["ratio_standard_200x128"] = float("nan")
    for _, part in df.groupby(group, sort=False):
        df.loc[part.index, "flag"] = ratio_flags(part)
        for recipe in STANDARD_RECIPES:
            standard = part[(part["method"] == "standard") & (part["recipe"] == recipe)]
            if part["protocol"].iloc[0] == "paper" and not standard.empty:
                df.loc[part.index, f"ratio_standard_{recipe}"] = part["recipe_ratio"] / standard["recipe_ratio"].iloc[-1]
    df["order"] = df["method"].map({m: i for i, m in enumerate(METHOD_ORDER)}).fillna(len(METHOD_ORDER))
    return df.sort_values([*group, "order", "teacher", "recipe"]).drop(columns="order").reset_index(drop=True)


def _cost_units(r: pd.Series) -> float:
    """What a loader batch's passes cost per image, in forward+backward passes (forward-only at
    :data:`FORWARD_SHARE`)."""
    return float(r["fwd_bwd_passes"]) + FORWARD_SHARE * float(r["fwd_only_passes"])


def primary_rows(df: pd.DataFrame) -> pd.DataFrame:
    """One row per (device, arch, sigma, method, teacher) for the figures: the engine protocol's where there
    is one, at the method's own recipe (not standard training's 200 x 128), the newest configuration."""
    if df.empty:
        return df
    pick = df[df["recipe"] != "200x128"].assign(_engine=lambda d: d["protocol"] == "engine")
    pick = pick.sort_values(["_engine", "time"]).drop_duplicates(
        ["device", "arch", "sigma", "method", "teacher"], keep="last")
    return df.loc[sorted(pick.index)]


def _with_interval(value: float, low: float, high: float) -> str:
    return f"{value:.2f}" if pd.isna(low) or pd.isna(high) else f"{value:.2f} [{low:.2f}, {high:.2f}]"


SLOWDOWN_HEADER = ("method", "teacher", "configuration", "recipe", "batch", "fwd+bwd passes", "fwd-only passes",
                   "epoch (s)", "epoch x [CI]", "hours", "expected x (passes)", "recipe x Gaussian [CI]",
                   "x standard 150x256", "x standard 200x128", "paper x (ResNet-110, vs standard)", "kernel busy",
                   "flag")


def _number(value: float) -> str:
    return "" if pd.isna(value) else f"{value:.2f}"


def _slowdown_cells(r: pd.Series) -> list[object]:
    basis = "" if r["hours_basis"] == "measured" else " (projected)"
    flag = r.get("flag", "")
    busy = r.get("kernel_busy_fraction", float("nan"))
    return [r["method"], r["teacher"] or "", r.get("config", ""), r.get("recipe", ""), r["batch"],
            f"{r['fwd_bwd_passes']:.2f}", f"{r['fwd_only_passes']:.2f}", f"{r['epoch_seconds']:.1f}",
            _with_interval(r["epoch_ratio"], r["epoch_ratio_low"], r["epoch_ratio_high"]), f"{r['hours']:.3g}{basis}",
            _number(r.get("expected_ratio", float("nan"))),
            _with_interval(r["recipe_ratio"], r["recipe_ratio_low"], r["recipe_ratio_high"]),
            _number(r.get("ratio_standard_150x256", float("nan"))),
            _number(r.get("ratio_standard_200x128", float("nan"))), _number(r["paper_ratio_resnet110"]),
            "n/a (no GPU profiler)" if pd.isna(busy) else f"{busy:.0%}", "⚠ " + flag if flag else ""]


def slowdown_markdown(df: pd.DataFrame) -> str:
    """The table as markdown, one section per (device, arch, sigma, protocol); flagged ratios marked ⚠."""
    lines = []
    group = ["device", "arch", "sigma", "protocol"] if "protocol" in df else ["device", "arch", "sigma"]
    for key, part in df.groupby(group, sort=False):
        device, arch, sigma = key[:3]
        protocol = key[3] if len(key) > 3 else "engine"
        rounds = sorted({int(x) for x in part.get("rounds", pd.Series([0])) if x})
        how = f"interleaved, {', '.join(map(str, rounds))} rounds" if rounds else "timed apart"
        precision = "/".join(sorted(set(part["precision"].astype(str))))
        measures = sorted({m for m in part.get("measure", pd.Series([], dtype=str)) if m})
        lines += [f"### {arch}, sigma {sigma:g} — {device}, {protocol} protocol, {precision} ({how})", "",
                  *markdown_table(SLOWDOWN_HEADER, [_slowdown_cells(r) for _, r in part.iterrows()]), ""]
        lines += [f"Measured: {'; '.join(measures)}.", ""] if measures else []
    lines.append("Baseline: Gaussian training at its recipe (150 epochs, batch 256) on the same device, timed in the "
                 "same rounds (recipe x Gaussian). The paper divides by standard (noise-free) training of unstated "
                 "settings; the paper protocol also times standard training at 150 x 256 and at the CRT authors' "
                 "200 x 128 (x standard columns: the method's recipe ratio over standard's). Engine protocol: the "
                 "training step alone on one batch already on the device; paper protocol: the official scripts' "
                 "loop (crt_bench.timing.paper). Expected x: what the passes imply (forward+backward passes, a "
                 f"forward-only one at {FORWARD_SHARE:.2f}) times the recipes' epochs. Kernel busy: GPU kernel time "
                 "over wall time (torch.profiler); below "
                 f"{LAUNCH_BOUND:.0%} the step is launch-bound and flagged. "
                 "fwd+bwd passes: forward+backward passes over the loader batch's images per loader batch; "
                 "fwd-only: forward passes without gradient (CRT's teacher). Hours are measured from full runs "
                 "on the same device where they exist, else projected from timing probes (epoch time x the "
                 "recipe's epochs); the recipe ratio divides measured by measured hours only, else projected by "
                 "projected. "
                 "Interleaved probes time an architecture's methods round-robin in one process; a ratio is the "
                 "median over rounds of the same-round ratio to Gaussian, its CI a distribution-free interval for "
                 "that median (order statistics of the rounds). ⚠ marks a ratio that cannot be trusted: a wide "
                 f"interval (wider than {WIDE_RELATIVE:.0%} of the ratio), no interval, a launch-bound step, or a "
                 "method measured faster than one it out-works (more passes than Gaussian's one, or at least "
                 f"{OUTWORK_FACTOR:g}x another method's passes: impossible, the machine's load decided it).")
    return "\n".join(lines) + "\n"


def fidelity_markdown(df: pd.DataFrame) -> str:
    """Per (device, arch, sigma, protocol) with SmoothMix: the paper's three methods' configuration, expected
    and measured ratios, the paper's figure and the factor that remains (paper over measured, against the
    closest baseline timed: standard 200 x 128 where the paper protocol timed it, else Gaussian), and the
    baseline-free ratios SmoothAdv / SmoothMix and MACER / SmoothMix beside the paper's 9.30 and 4.20."""
    if df.empty or "protocol" not in df:
        return ""
    lines = []
    for (device, arch, sigma, protocol), part in df.groupby(["device", "arch", "sigma", "protocol"], sort=False):
        part = part[part["method"].isin(PAPER_SLOWDOWN) & (part["teacher"].fillna("") == "")]
        if "smoothmix" not in set(part["method"]):
            continue
        mix = part[part["method"] == "smoothmix"].iloc[-1]
        rows = []
        for _, r in part.iterrows():
            against = r.get("ratio_standard_200x128", float("nan"))
            baseline = "standard 200x128"
            if pd.isna(against):
                against, baseline = r["recipe_ratio"], "Gaussian 150x256"
            paper = PAPER_SLOWDOWN[r["method"]]
            free = PAPER_BASELINE_FREE.get((r["method"], "smoothmix"), float("nan"))
            rows.append([r["method"], r["config"], _number(r["expected_ratio"]), _number(r["recipe_ratio"]),
                         f"{_number(against)} ({baseline})", f"{paper:.2f}", _number(paper / against),
                         _number(r["recipe_ratio"] / mix["recipe_ratio"]) if r["method"] != "smoothmix" else "",
                         _number(free)])
        lines += [f"### {arch}, sigma {sigma:g} — {device}, {protocol} protocol", "", *markdown_table(
            ("method", "configuration", "expected x Gaussian", "measured x Gaussian", "measured x baseline",
             "paper x", "remaining factor (paper / measured)", "x SmoothMix", "paper x SmoothMix"), rows), ""]
    return "\n".join(lines)
