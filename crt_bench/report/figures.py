"""Figure 1: cumulative training hours to obtain a certifiably robust model of each new architecture.

x: architectures in release order; y: cumulative hours. One line per method: SmoothAdv, MACER and
SmoothMix pay their full cost for every architecture; CRT with a pretrained ResNet-110 teacher pays
about the cost of standard training per architecture; CRT with a ResNet-20 proxy teacher also pays
the proxy's own SmoothMix training, once, at the start. Points built from projected hours are drawn
hollow with a dashed line; measured ones solid. A shaded band is the cumulative interval of the
interleaved probes' ratios; a red x marks a point whose ratio the slowdown table flags.

Second panel (when the store holds certified models, :func:`crt_bench.analysis.costs.measured_costs`):
each certified model's measured training hours and certification hours stacked, so that a method that
moves its cost into certification (denoised smoothing; or a transferred certificate that saves it) is
seen doing so.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from crt_bench.models.registry import get_arch  # noqa: E402
from crt_bench.report.figure_files import save_figure  # noqa: E402

matplotlib.use("Agg")

LINES = [  # (label, method, teacher_arch)
    ("SmoothAdv", "smoothadv", ""),
    ("MACER", "macer", ""),
    ("SmoothMix", "smoothmix", ""),
    ("CRT, pretrained ResNet-110 teacher", "crt", "resnet110"),
    ("CRT, ResNet-20 proxy teacher (its training counted once)", "crt", "resnet20"),
]
PROXY_TEACHER = ("smoothmix", "resnet20")


def _bounds(row: pd.Series) -> tuple[float, float]:
    """A row's hours interval (interleaved probes); its hours when it has none."""
    hours = float(row["hours"])
    low, high = row.get("hours_low", float("nan")), row.get("hours_high", float("nan"))
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return hours, hours
    return float(low), float(high)


def cumulative_hours(slowdown: pd.DataFrame, archs: list[str] | None = None, sigma: float | None = None) -> pd.DataFrame:
    """The plotted data: one row per (line, arch) with hours, cumulative hours and their basis (measured or projected)."""
    df = slowdown
    if sigma is not None:
        df = df[df["sigma"] == sigma]
    if df.empty:
        return pd.DataFrame()
    device = df["device"].iloc[0]
    df = df[df["device"] == device]
    generation_archs = [a for a in df["arch"].unique() if get_arch(a).family not in ("test", "CIFAR ResNet")]
    archs = archs or sorted(generation_archs, key=lambda a: (get_arch(a).generation, a))
    rows = []
    for label, method, teacher in LINES:
        part = df[(df["method"] == method) & (df["teacher"].fillna("") == teacher)].set_index("arch")
        if not all(a in part.index for a in archs):
            continue
        total = 0.0
        if method == "crt" and teacher == PROXY_TEACHER[1]:
            proxy = df[(df["method"] == PROXY_TEACHER[0]) & (df["arch"] == PROXY_TEACHER[1])]
            if proxy.empty:
                continue
            total = float(proxy["hours"].iloc[0])
            low, high = _bounds(proxy.iloc[0])
            flag = str(proxy.iloc[0].get("flag", "") or "")
            rows.append({"line": label, "arch": "(proxy teacher)", "position": 0, "hours": total,
                         "cumulative_hours": total, "cumulative_low": low, "cumulative_high": high, "flag": flag,
                         "hours_basis": proxy["hours_basis"].iloc[0], "device": device})
        else:
            low = high = 0.0
        for i, arch in enumerate(archs, start=1):
            hours = float(part.loc[arch, "hours"])
            h_low, h_high = _bounds(part.loc[arch])
            total, low, high = total + hours, low + h_low, high + h_high
            rows.append({"line": label, "arch": arch, "position": i, "hours": hours, "cumulative_hours": total,
                         "cumulative_low": low, "cumulative_high": high, "flag": str(part.loc[arch].get("flag", "") or ""),
                         "hours_basis": part.loc[arch, "hours_basis"], "device": device})
    return pd.DataFrame(rows)


def plot_cumulative(data: pd.DataFrame, out_dir: Path, stem: str = "cumulative_training_time",
                    costs: pd.DataFrame | None = None) -> tuple[list[Path], dict[str, list[float]]]:
    """Draw the figure from ``cumulative_hours`` output; writes PNG and PDF.

    Returns the file paths and, per line label, the y values as drawn (read back from the figure).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    archs = data[data["position"] > 0].drop_duplicates("position").sort_values("position")["arch"].tolist()
    width = max(7.0, 0.75 * len(archs) + 3)
    if costs is not None and not costs.empty:
        fig, (ax, cost_ax) = plt.subplots(1, 2, figsize=(width + 7.5, 5.4), gridspec_kw={"width_ratios": [width, 7.5]})
        plot_costs(costs, cost_ax)
    else:
        fig, ax = plt.subplots(figsize=(width, 4.8))
    for label, part in data.groupby("line", sort=False):
        part = part.sort_values("position")
        projected = (part["hours_basis"] == "projected").any()
        (line,) = ax.plot(part["position"], part["cumulative_hours"], linestyle="--" if projected else "-",
                          marker="o", markerfacecolor="none" if projected else None, label=label)
        if {"cumulative_low", "cumulative_high"} <= set(part.columns):
            ax.fill_between(part["position"], part["cumulative_low"], part["cumulative_high"],
                            color=line.get_color(), alpha=0.15, linewidth=0)
        if "flag" in part.columns:
            bad = part[part["flag"].fillna("") != ""]
            ax.plot(bad["position"], bad["cumulative_hours"], linestyle="none", marker="x", color="red",
                    markersize=9, label="_flagged")
    if "flag" in data.columns and (data["flag"].fillna("") != "").any():
        ax.plot([], [], linestyle="none", marker="x", color="red", label="⚠ ratio not trusted (slowdown table's flag)")
    labels = [f"{a}\n({get_arch(a).generation})" for a in archs]
    ax.set_xticks(range(1, len(archs) + 1), labels, rotation=45, ha="right", fontsize=8)
    if (data["position"] == 0).any():
        ax.set_xlim(-0.3, len(archs) + 0.3)
    ax.set_xlabel("architecture, in release order")
    ax.set_ylabel("cumulative training hours")
    ax.set_yscale("log")
    ax.grid(True, which="both", alpha=0.3)
    device = data["device"].iloc[0]
    basis = "projected from timing probes (dashed, hollow)" if (data["hours_basis"] == "projected").any() else "measured"
    ax.set_title(f"Cost of a certifiably robust model per new architecture\n{device}; {basis}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = save_figure(fig, out_dir / stem)
    drawn = {line.get_label(): [float(v) for v in line.get_ydata()] for line in ax.get_lines()
             if not line.get_label().startswith("_") and not line.get_label().startswith("⚠")}
    plt.close(fig)
    return paths, drawn


def plot_costs(costs: pd.DataFrame, ax: plt.Axes) -> None:
    """Horizontal stacked bars: training hours then certification hours of each certified model (seed mean)."""
    mean = (costs.groupby(["arch", "line", "certification"], sort=False)[["train_hours", "certify_hours", "images"]]
            .mean().reset_index())
    labels = [f"{r.arch}: {r.line}" + ("" if r.certification == "CERTIFY" else f", {r.certification}")
              for r in mean.itertuples()]
    y = range(len(mean))
    ax.barh(y, mean["train_hours"], color="tab:blue", label="training hours")
    ax.barh(y, mean["certify_hours"], left=mean["train_hours"], color="tab:orange",
            label=f"certification hours ({int(mean['images'].max())} images)")
    ax.set_yticks(list(y), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("measured hours per model (mean over seeds)")
    ax.set_title("Measured: training + certification", fontsize=10)
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8)


def plot_costs_figure(costs: pd.DataFrame, out_dir: Path, stem: str = "cumulative_training_time") -> list[Path]:
    """Figure 1's measured panel alone (a store without timing probes): PNG and PDF."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8.5, 0.45 * len(costs) + 2.5))
    plot_costs(costs, ax)
    fig.tight_layout()
    paths = save_figure(fig, out_dir / stem)
    plt.close(fig)
    return paths
