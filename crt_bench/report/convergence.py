"""Convergence in sight: each trained run's loss and noisy test accuracy per epoch, small multiples.

One column per run (teachers first, then students by architecture and method); the top row is the
training loss, the bottom row the base classifier's accuracy on one noisy draw of the test images
(``epochs`` table, :func:`crt_bench.train.evaluate.noisy_accuracy`). Each title says whether the accuracy has
plateaued (:func:`crt_bench.analysis.evidence.plateau_status`), so an under-trained model is visible.
"""
from __future__ import annotations

import math
from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from crt_bench.analysis.evidence import plateau_status  # noqa: E402
from crt_bench.analysis.select import METHOD_LABELS, arch_generation  # noqa: E402
from crt_bench.report.figure_files import save_figure  # noqa: E402
from crt_bench.store.store import ResultsStore  # noqa: E402

matplotlib.use("Agg")

COLUMNS = ["run_id", "label", "method", "arch", "epoch", "loss", "noisy_test_acc", "status"]


def training_curves(store: ResultsStore) -> pd.DataFrame:
    """Per run and epoch: loss, noisy test accuracy, and the run's plateau status (``status``)."""
    epochs, runs = store.read("epochs"), store.runs()
    if epochs.empty or runs.empty:
        return pd.DataFrame(columns=COLUMNS)
    info = runs.set_index("run_id")
    teachers = set(runs.get("teacher_run_id", pd.Series(dtype=str)).dropna()) - {""}
    out = []
    for run_id, part in epochs.groupby("run_id", sort=False):
        if run_id not in info.index:
            continue
        r = info.loc[run_id]
        part = part.sort_values("epoch")
        role = "teacher " if run_id in teachers else ""
        teacher = f" <- {r['teacher_arch']}" if r.get("teacher_arch") else ""
        label = f"{role}{METHOD_LABELS.get(r['method'], r['method'])} {r['arch']}{teacher}"
        status = plateau_status(part["noisy_test_acc"].tolist())
        for _, e in part.iterrows():
            out.append((run_id, label, r["method"], r["arch"], int(e["epoch"]), float(e["loss"]),
                        float(e["noisy_test_acc"]), status))
    df = pd.DataFrame(out, columns=COLUMNS)
    if df.empty:
        return df
    df["_teacher"] = ~df["label"].str.startswith("teacher")
    df["_gen"] = df["arch"].map(arch_generation)
    return df.sort_values(["_teacher", "_gen", "arch", "method", "epoch"], kind="stable").drop(
        columns=["_teacher", "_gen"]).reset_index(drop=True)


def plot_training_curves(data: pd.DataFrame, out_dir: Path, stem: str = "training_curves") -> list[Path]:
    """Draw :func:`training_curves` output; writes PNG and PDF (nothing for empty data)."""
    if data.empty:
        return []
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = list(dict.fromkeys(data["run_id"]))
    ncols = min(4, len(runs))
    blocks = math.ceil(len(runs) / ncols)
    fig, axes = plt.subplots(2 * blocks, ncols, figsize=(3.0 * ncols, 4.2 * blocks), squeeze=False)
    for i, run_id in enumerate(runs):
        part = data[data["run_id"] == run_id]
        top, bottom = axes[2 * (i // ncols), i % ncols], axes[2 * (i // ncols) + 1, i % ncols]
        top.plot(part["epoch"], part["loss"], marker=".", color="tab:blue")
        top.set_title(f"{part['label'].iloc[0]}\n({part['status'].iloc[0]})", fontsize=8,
                      color="black" if part["status"].iloc[0] == "plateaued" else "tab:red")
        top.set_ylabel("training loss", fontsize=7)
        bottom.plot(part["epoch"], part["noisy_test_acc"], marker=".", color="tab:green")
        bottom.set_ylim(0, 1)
        bottom.set_ylabel("noisy test accuracy", fontsize=7)
        bottom.set_xlabel("epoch", fontsize=7)
        for ax in (top, bottom):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.tick_params(labelsize=7)
            ax.grid(True, alpha=0.3)
    for j in range(len(runs), blocks * ncols):
        axes[2 * (j // ncols), j % ncols].set_visible(False)
        axes[2 * (j // ncols) + 1, j % ncols].set_visible(False)
    fig.suptitle("Training loss and noisy test accuracy per epoch (red title: not plateaued)", fontsize=10)
    fig.tight_layout()
    paths = save_figure(fig, out_dir / stem, dpi=120)
    plt.close(fig)
    return paths


__all__ = ["plot_training_curves", "training_curves"]
