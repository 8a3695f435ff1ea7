"""The leaderboard's files: LEADERBOARD.md (a table per comparable group), a figure per group, JSON entries.

Layout under the output folder::

    leaderboard/LEADERBOARD.md          every group's table, then the unranked entries with the reason
    leaderboard/leaderboard.csv         all groups' rows (with the group's fields)
    leaderboard/frontier-<k>.png/.pdf   hours (log axis) vs ACR with intervals, frontier drawn, points labelled
    leaderboard/entries/<id>.json       one file per entry (schema: crt_bench.analysis.leaderboard)
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from crt_bench.analysis.leaderboard import GROUP_FIELDS, Entry, board, group_entries  # noqa: E402
from crt_bench.analysis.leaderboard_entries import write_entries  # noqa: E402
from crt_bench.core.atomic import atomic_write_bytes  # noqa: E402
from crt_bench.core.constants import LEADERBOARD_RADII  # noqa: E402
from crt_bench.report.figure_files import save_figure  # noqa: E402
from crt_bench.report.markdown import markdown_table  # noqa: E402

matplotlib.use("Agg")

LEADERBOARD_DIR = "leaderboard"
LEADERBOARD_FILE = "LEADERBOARD.md"


def group_title(key: tuple) -> str:
    fields = dict(zip(GROUP_FIELDS, key))
    return (f"{fields['dataset']}, sigma {fields['sigma']:g}, device {fields['device']}, N = {fields['N']:,}, "
            f"{fields['subset']}")


def board_markdown(table: pd.DataFrame) -> str:
    head = ["rank", "method", "arch", "teacher", "hours", "ACR [95% CI]", *[f"acc@{r:g}" for r in LEADERBOARD_RADII], "images",
            "N", "commit", "device", "status", "tied with"]
    rows = []
    for row in table.to_dict("records"):
        hours = f"{row['hours']:.4g}" + (" (reported)" if row["hours_basis"] == "reported" else "")
        rows.append([
            row["rank"], row["method"], row["arch"], row["teacher"] or "–", hours,
            f"{row['ACR']:.3f} [{row['ACR_low']:.3f}, {row['ACR_high']:.3f}]",
            *[f"{row[f'acc@{r:g}']:.3f}" for r in LEADERBOARD_RADII], row["images"], f"{row['N']:,}",
            (row["commit"] or "–")[:10], row["device"], row["status"], row["tied_with"] or "–"])
    return "\n".join(markdown_table(head, rows)) + "\n"


def plot_frontier(entries: list[Entry], table: pd.DataFrame, title: str, stem: Path) -> list[Path]:
    """Hours (log) vs ACR with 95% intervals; the frontier as a step line; each point labelled."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by_id = {e.entry_id: e for e in entries}
    for r in table.itertuples(index=False):
        e = by_id[r.entry_id]
        on = r.rank != "-"
        ax.errorbar([e.hours], [e.acr.estimate], yerr=[[e.acr.estimate - e.acr.low], [e.acr.high - e.acr.estimate]],
                    fmt="o" if on else "x", color="C0" if on else "0.5", capsize=3)
        ax.annotate((f"#{r.rank} " if on else "") + e.label, (e.hours, e.acr.estimate), textcoords="offset points",
                    xytext=(5, 4), fontsize=7)
    front = table[table["rank"] != "-"].sort_values("hours")
    if len(front) > 1:
        ax.step(front["hours"], front["ACR"], where="post", color="C0", alpha=0.6, label="Pareto frontier")
        ax.legend(fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("training hours (log scale; a dedicated teacher's hours included)")
    ax.set_ylabel("ACR (95% bootstrap interval)")
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    paths = save_figure(fig, stem, dpi=130)
    plt.close(fig)
    return paths


def write_leaderboard(entries: list[Entry], out_dir: str | Path,
                      missing: list[tuple[str, str]] | None = None) -> dict[str, list[Path]]:
    """Every leaderboard file for ``entries`` under ``out_dir``; ``{"markdown", "figures", "entries"}``.

    ``missing``: (run, reason) pairs of runs without an entry (:func:`crt_bench.analysis.leaderboard_entries.missing_from_store`).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lb = group_entries(entries)
    lines = ["Pareto frontier of (training hours, ACR) per dataset, sigma, device, N and certified images: a row is "
             "ranked when no other entry of its group trains in no more hours to no lower ACR. Rows whose 95% ACR "
             "intervals overlap are tied. ACR ranks; certified accuracy at fixed radii (acc@r) is shown beside it "
             "and does not rank. Every number is recomputed from the entries' per-image rows.", ""]
    figures: list[Path] = []
    frames = []
    for k, (key, group) in enumerate(sorted(lb.groups.items(), key=lambda kv: str(kv[0])), 1):
        table = board(group)
        title = group_title(key)
        stem = out_dir / f"frontier-{k}"
        drawn = plot_frontier(group, table, title, stem)
        figures += drawn
        lines += [f"### {title}", "", board_markdown(table).rstrip(), "",
                  f"![frontier {k}]({drawn[0].name})", ""]
        frames.append(table.assign(**dict(zip(GROUP_FIELDS, key))))
    if not lb.groups:
        lines += ["No data: no entry with known training hours, dataset, device and sigma.", ""]
    if lb.unranked:
        lines += ["### Not ranked", "", *markdown_table(
            ["entry", "method", "arch", "images", "N", "ACR", "why"],
            [[e.entry_id, e.method or "?", e.arch or "?", e.images, f"{e.N:,}", e.acr.format(), reason]
             for e, reason in lb.unranked])]
        lines.append("")
    if missing:
        lines += ["### Missing (no certification)", "", *markdown_table(["run", "why"], missing)]
        lines.append("")
    if len(lb.groups) > 1:
        lines += [f"{len(lb.groups)} groups: entries of different groups are never ranked together (they differ in "
                  "dataset, sigma, device, N or certified images).", ""]
    md = atomic_write_bytes(out_dir / LEADERBOARD_FILE, "\n".join(lines).encode())
    csv = atomic_write_bytes(out_dir / "leaderboard.csv",
                             (pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()).to_csv(index=False)
                             .encode())
    return {"markdown": [md, csv], "figures": figures, "entries": write_entries(entries, out_dir / "entries")}


def leaderboard_section(out_dir: Path) -> list[str]:
    """REPORT.md's section: LEADERBOARD.md inlined, its figure links made relative to the report."""
    lines = ["## Cost-robustness leaderboard (Pareto frontier of training hours vs ACR)", ""]
    path = Path(out_dir) / LEADERBOARD_DIR / LEADERBOARD_FILE
    if not path.is_file():
        return lines + ["No data: no certification in the store.", ""]
    text = path.read_text().replace("](frontier-", f"]({LEADERBOARD_DIR}/frontier-")
    return lines + [text.rstrip(), "", f"JSON entries (mergeable with `crt-bench leaderboard --merge`): "
                                       f"`{LEADERBOARD_DIR}/entries/`.", ""]


__all__ = ["LEADERBOARD_DIR", "LEADERBOARD_FILE", "board_markdown", "leaderboard_section", "plot_frontier",
           "write_leaderboard"]
