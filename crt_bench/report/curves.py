"""Figure 2: certified accuracy vs L2 radius of (new-generation) students, CRT vs SmoothMix.

One panel per architecture (and sigma; and profile/dataset when the store mixes them) that has both a
certified CRT run and a certified SmoothMix run. Lines: SmoothMix, and CRT once per teacher
("CRT (teacher resnet20)"); each from the newest certification of that (method, teacher, arch, sigma,
dataset, profile). Published CIFAR-10 logs imported with ``crt-bench import-log`` are added to every
CIFAR-10 panel of the same sigma as reference curves ("published: <name>"); they are never drawn on a
synthetic or Fashion-MNIST panel, where they would not be comparable.

Values are always computed from the per-image certify rows with
:func:`crt_bench.analysis.metrics.certified_accuracy`, on a fine grid (step 0.01 up to the panel's largest
certified radius, at least to 2.25) merged with the standard radii 0, 0.25, ..., 2.25. Each panel's
title names the dataset, the number of certified images, N and each line's training epochs; its
radius axis ends just past the largest radius N allows (:func:`max_certifiable_radius`).
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from crt_bench.analysis.metrics import acr, certified_accuracy
from crt_bench.analysis.select import arch_generation, certifications, method_label, newest_per_line
from crt_bench.core.constants import IMPORT_PREFIX, SUMMARY_RADII
from crt_bench.report.figure_files import save_figure
from crt_bench.store.store import ResultsStore

matplotlib.use("Agg")

FIGURE2_METHODS: tuple[str, ...] = ("smoothmix", "crt")
PUBLISHED_DATASETS: tuple[str, ...] = ("cifar10",)  # every stored reference log is CIFAR-10
GRID_STEP = 0.01
CURVE_COLUMNS = ["panel", "arch", "sigma", "dataset", "profile", "label", "origin", "method", "teacher", "run_id",
                 "cert_id", "N", "alpha", "images", "epochs", "max_radius", "acr", "device", "radius", "standard",
                 "certified_accuracy"]
DATASET_NAMES = {"fashion-mnist": "Fashion-MNIST", "cifar10": "CIFAR-10", "synthetic": "synthetic data"}


def max_certifiable_radius(n: int, alpha: float, sigma: float) -> float:
    """The largest radius CERTIFY can return with ``n`` estimation samples: every sample votes for the
    top class, the one-sided Clopper-Pearson lower bound is ``alpha^(1/n)``, the radius
    ``sigma * Phi^-1(alpha^(1/n))`` (e.g. sigma 0.25: 0.80 at N = 10,000, 0.95 at N = 100,000)."""
    from scipy.stats import norm

    if n < 1 or not 0 < alpha < 1:
        return float("nan")
    return float(sigma * norm.ppf(alpha ** (1.0 / n)))


def radius_grid(max_radius: float, step: float = GRID_STEP) -> np.ndarray:
    """0, step, ... up to ``max_radius`` (rounded up to a step) or 2.25, whichever is larger, merged with
    :data:`~crt_bench.core.constants.SUMMARY_RADII`; sorted, unique. Fine all the way, so drawn curves drop where the data drop."""
    top = max(0.0, float(max_radius), max(SUMMARY_RADII))
    fine = np.round(np.arange(0, math.ceil(top / step - 1e-9) + 1) * step, 6)
    return np.unique(np.round(np.concatenate([fine, np.asarray(SUMMARY_RADII, dtype=np.float64)]), 6))


def certified_curves(store: ResultsStore, sigma: float | None = None, *, profile: str | None = None,
                     methods: tuple[str, ...] = FIGURE2_METHODS, include_published: bool = True) -> pd.DataFrame:
    """Figure 2's data in long format (columns :data:`CURVE_COLUMNS`), one row per (panel, line, radius).

    ``standard`` marks the radii of :data:`~crt_bench.core.constants.SUMMARY_RADII`. ``origin`` is ``"ours"`` or ``"published"``.
    Empty (with the columns) when no architecture has both a CRT and a SmoothMix certification.
    """
    meta, rows = certifications(store)
    lines = newest_per_line(meta)
    if not lines.empty:
        lines = lines[lines["method"].isin(methods)]
        if sigma is not None:
            lines = lines[np.isclose(lines["sigma"], sigma)]
        if profile is not None:
            lines = lines[lines["profile"] == profile]
    if lines.empty:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    panel_keys = ["arch", "sigma", "dataset", "profile"]
    panels = [(key, part) for key, part in lines.groupby(panel_keys, sort=False)
              if {"crt", "smoothmix"} <= set(part["method"])]
    if not panels:
        return pd.DataFrame(columns=CURVE_COLUMNS)
    panels.sort(key=lambda kp: (arch_generation(kp[0][0]), kp[0][0], kp[0][1], kp[0][3], kp[0][2]))
    many_profiles = len({k[3] for k, _ in panels}) > 1
    many_datasets = len({k[2] for k, _ in panels}) > 1
    published = meta[meta["imported"]] if include_published and not meta.empty else meta.iloc[0:0]
    runs = store.runs()
    epochs_of = dict(zip(runs["run_id"], runs["epochs"])) if not runs.empty and "epochs" in runs else {}

    out = []
    for (arch, sig, dataset, prof), part in panels:
        name = f"{arch}, sigma {sig:g}" + (f", {prof}" if many_profiles else "") + (f", {dataset}" if many_datasets else "")
        part = part.assign(_rank=part["method"].map({m: i for i, m in enumerate(methods)})).sort_values(
            ["_rank", "teacher", "teacher_method"], kind="stable")
        members = [(method_label(m["method"], m["teacher"], m["teacher_method"], m.get("variant", "")), "ours", m) for _, m in part.iterrows()]
        if dataset in PUBLISHED_DATASETS or dataset == "":
            members += [(f"published: {str(p['run_id']).removeprefix(IMPORT_PREFIX)}", "published", p)
                        for _, p in published.iterrows() if not math.isnan(p["sigma"]) and np.isclose(p["sigma"], sig)]
        grid = radius_grid(max(float(rows[m["cert_id"]]["radius"].max()) for _, _, m in members))
        standard = np.isin(grid, np.round(np.asarray(SUMMARY_RADII, dtype=np.float64), 6))
        for label, origin, m in members:
            cert_rows = rows[m["cert_id"]]
            acc = certified_accuracy(cert_rows, grid)
            line_acr = acr(cert_rows)
            alpha = float(cert_rows["alpha"].iloc[0]) if "alpha" in cert_rows and not pd.isna(cert_rows["alpha"].iloc[0]) \
                else float("nan")
            cap = max_certifiable_radius(int(m["N"]), alpha, sig) if not math.isnan(alpha) else float("nan")
            epochs = epochs_of.get(m["run_id"], float("nan"))
            for radius, is_standard, value in zip(grid, standard, acc.to_numpy()):
                out.append((name, arch, sig, dataset, prof, label, origin, m["method"] or "imported", m["teacher"] or "",
                            m["run_id"], m["cert_id"], int(m["N"]), alpha, int(m["images"]), epochs, cap, line_acr,
                            m["device"] or m["cert_device"], float(radius), bool(is_standard), float(value)))
    return pd.DataFrame(out, columns=CURVE_COLUMNS)


def _axis_end(part: pd.DataFrame) -> float:
    """Where the panel's radius axis ends: just past the largest radius our certifications' N allows
    (or the largest certified radius of a line without N, e.g. a published log)."""
    ours = part[part["origin"] == "ours"]
    caps = ours["max_radius"].dropna() if "max_radius" in ours else pd.Series(dtype=float)
    reached = part.loc[part["certified_accuracy"] > 0, "radius"]
    top = max([float(caps.max()) if not caps.empty else 0.0,
               float(reached.max()) if not reached.empty else 0.0, 0.25])
    return top * 1.05


def _panel_caption(panel: str, part: pd.DataFrame) -> str:
    """``convnext_atto, sigma 0.25`` + dataset, images, N and the epochs of each of our lines."""
    ours = part[part["origin"] == "ours"].drop_duplicates("label")
    if ours.empty:
        return panel
    first = ours.iloc[0]
    dataset = DATASET_NAMES.get(first["dataset"], first["dataset"])
    images = "/".join(str(v) for v in dict.fromkeys(ours["images"].astype(int)))
    n = "/".join(f"{v:,}" for v in dict.fromkeys(ours["N"].astype(int)))
    epochs = ", ".join(f"{r['label'].split(' (')[0]} {int(r['epochs'])}" for _, r in ours.iterrows()
                       if not pd.isna(r["epochs"]))
    return f"{panel}\n{dataset}, {images} test images, N={n}" + (f"\nepochs: {epochs}" if epochs else "")


def plot_curves(data: pd.DataFrame, out_dir: Path, stem: str = "certified_accuracy"
                ) -> tuple[list[Path], dict[tuple[str, str], list[float]]]:
    """Draw :func:`certified_curves` output, one panel per ``panel``; writes ``<stem>.png`` and ``.pdf``.

    Returns the file paths and, per (panel, label), the y values as drawn (read back from the figure).
    Nothing is written for empty data: ``([], {})``.
    """
    if data.empty:
        return [], {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = list(dict.fromkeys(data["panel"]))
    ncols = min(3, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.9 * nrows), squeeze=False, sharey=True)
    for ax, panel in zip(axes.flat, panels):
        part = data[data["panel"] == panel]
        for label, line in part.groupby("label", sort=False):
            line = line.sort_values("radius", kind="stable")
            published = line["origin"].iloc[0] == "published"
            (drawn_line,) = ax.plot(line["radius"], line["certified_accuracy"], drawstyle="steps-post",
                                    linestyle=":" if published else "-",
                                    linewidth=1.2 if published else 1.8, color="0.45" if published else None,
                                    label=f"{label} (ACR {line['acr'].iloc[0]:.3f})")
            drawn_line.set_gid(label)
        ax.set_title(_panel_caption(panel, part), fontsize=9)
        ax.set_xlabel("L2 radius")
        ax.set_ylim(0, 1)
        ax.set_xlim(0, _axis_end(part))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("certified accuracy")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    devices = ", ".join(sorted({d for d in data.loc[data["origin"] == "ours", "device"] if d}))
    fig.suptitle(f"Certified accuracy vs L2 radius: CRT students vs SmoothMix\n{devices}", fontsize=10)
    fig.tight_layout()
    paths = save_figure(fig, out_dir / stem)
    drawn = {(panel, line.get_gid()): [float(v) for v in line.get_ydata()]
             for ax, panel in zip(axes.flat, panels) for line in ax.get_lines()}
    plt.close(fig)
    return paths, drawn


__all__ = ["CURVE_COLUMNS", "certified_curves", "plot_curves", "radius_grid"]
