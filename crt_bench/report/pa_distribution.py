"""The empirical distribution (ECDF) of each model's p_A lower bound: one panel per (architecture, sigma).

Per image, ``p_a_lower`` (the Clopper-Pearson bound CERTIFY's radius comes from, kept by certify rows of schema
4, :data:`~crt_bench.store.schema.COUNT_COLUMNS`).  Below 1/2 an image abstains; the radius is
``sigma * Phi^-1(p_a_lower)`` above.  Unlike ACR, the whole distribution shows whether a model certifies many
images a little or a few easy ones by much (Sun et al., ICML 2025).  A certification whose rows lack the bound
(written before it was kept, or an imported log) is left out.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from crt_bench.analysis.select import certifications, method_label, newest_per_line  # noqa: E402
from crt_bench.report.figure_files import save_figure  # noqa: E402
from crt_bench.store.store import ResultsStore  # noqa: E402

matplotlib.use("Agg")

PA_COLUMNS = ("panel", "label", "cert_id", "idx", "p_a_lower")
PA_TITLE = "Distribution of p_A per model: the ECDF of each image's Clopper-Pearson lower bound p_A_lower"


def pa_distribution(store: ResultsStore) -> pd.DataFrame:
    """One row per image of the newest certification of each trained model line that kept ``p_a_lower``."""
    meta, rows = certifications(store)
    lines = newest_per_line(meta)
    out = []
    for _, m in lines.iterrows():
        part = rows[m["cert_id"]]
        if "p_a_lower" not in part or part["p_a_lower"].isna().any():
            continue
        panel = f"{m['arch']}, sigma {m['sigma']:g}, {m['dataset']}, {m['profile']}"
        label = method_label(m["method"], m["teacher"], m["teacher_method"], m.get("variant", ""))
        out.append(pd.DataFrame({"panel": panel, "label": label, "cert_id": m["cert_id"], "idx": part["idx"].to_numpy(),
                                 "p_a_lower": part["p_a_lower"].to_numpy(dtype=np.float64)}))
    return pd.concat(out, ignore_index=True)[list(PA_COLUMNS)] if out else pd.DataFrame(columns=PA_COLUMNS)


def ecdf(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sorted values, fraction of values <= each): the steps of the empirical distribution function."""
    x = np.sort(np.asarray(values, dtype=np.float64))
    return x, np.arange(1, len(x) + 1) / len(x)


def plot_pa_ecdf(data: pd.DataFrame, out_dir: Path, stem: str = "pa_ecdf") -> list[Path]:
    """Draw :func:`pa_distribution` output: ``<stem>.png`` and ``.pdf``; nothing for empty data."""
    if data.empty:
        return []
    panels = list(dict.fromkeys(data["panel"]))
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False, sharey=True)
    for ax, panel in zip(axes.flat, panels):
        for label, line in data[data["panel"] == panel].groupby("label", sort=False):
            x, y = ecdf(line["p_a_lower"].to_numpy())
            ax.step(np.r_[0.0, x, 1.0], np.r_[0.0, y, 1.0], where="post", label=f"{label} ({len(x)} images)")
        ax.axvline(0.5, color="0.4", linestyle=":", linewidth=1)
        ax.text(0.49, 0.97, "abstain", ha="right", va="top", fontsize=7, color="0.4")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(panel, fontsize=9)
        ax.set_xlabel("p_A lower bound")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, 0.9))
    for ax in axes[:, 0]:
        ax.set_ylabel("fraction of images <= x")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    fig.tight_layout()
    paths = save_figure(fig, Path(out_dir) / stem)
    plt.close(fig)
    return paths
