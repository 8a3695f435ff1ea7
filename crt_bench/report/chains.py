"""Recursive-CRT chains in the report: a table and a figure per chain saved under ``RESULTS/chains/``.

The figure puts ACR (95% bootstrap interval) per generation next to the chain's cumulative training
hours (right axis), with the direct CRT from the root teacher to the same architecture as a dashed
reference line where it was certified: drift down the chain shows as the solid line falling below the
dashed one.
"""
from __future__ import annotations

from pathlib import Path

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from crt_bench.analysis.chains import chain_table  # noqa: E402
from crt_bench.core.atomic import atomic_write_bytes
from crt_bench.report.figure_files import save_figure  # noqa: E402
from crt_bench.report.markdown import markdown_table  # noqa: E402
from crt_bench.store.chains import saved_chains  # noqa: E402
from crt_bench.store.store import ResultsStore  # noqa: E402

matplotlib.use("Agg")


def chain_tables(store: ResultsStore) -> list[pd.DataFrame]:
    return [chain_table(store, chain) for chain in saved_chains(store.root)]


def plot_chain(table: pd.DataFrame, stem: Path) -> list[Path]:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    x = table["generation"].to_numpy()
    labels = [f"{g}: {a}" for g, a in zip(table["generation"], table["arch"])]
    have = table["ACR"].notna()
    t = table[have]
    ax.errorbar(t["generation"], t["ACR"], yerr=[t["ACR"] - t["ACR_low"], t["ACR_high"] - t["ACR"]], fmt="o-",
                color="C0", capsize=3, label="chain: ACR (95% CI)")
    d = table[table["direct_ACR"].notna()]
    if not d.empty:
        ax.errorbar(d["generation"] + 0.08, d["direct_ACR"],
                    yerr=[d["direct_ACR"] - d["direct_ACR_low"], d["direct_ACR_high"] - d["direct_ACR"]], fmt="s--",
                    color="C2", capsize=3, label="direct CRT from the root (reference)")
    ax.set_xticks(x, labels, rotation=20, ha="right", fontsize=7)
    ax.set_ylabel("ACR")
    ax.set_xlabel("generation: architecture (0 = root teacher)")
    right = ax.twinx()
    h = table[table["cumulative_hours"].notna()]
    right.plot(h["generation"], h["cumulative_hours"], "^:", color="C3", label="cumulative training hours")
    right.set_ylabel("cumulative training hours")
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="best")
    ax.set_title(f"Recursive CRT: {table['chain'].iloc[0]}", fontsize=9)
    fig.tight_layout()
    paths = save_figure(fig, stem, dpi=130)
    plt.close(fig)
    return paths


def _f(value: float, spec: str = ".3f") -> str:
    return "–" if pd.isna(value) else f"{value:{spec}}"


def chain_markdown(table: pd.DataFrame) -> str:
    head = ["gen", "arch", "teacher", "status", "hours", "cumulative h", "images", "N", "ACR [95% CI]",
            "acc@0.25", "acc@0.5", "acc@0.75", "acc@1.0", "agreement with root", "mean abs radius diff",
            "direct CRT ACR [95% CI]"]
    rows = []
    for r in table.to_dict("records"):
        acr = "–" if pd.isna(r["ACR"]) else f"{r['ACR']:.3f} [{r['ACR_low']:.3f}, {r['ACR_high']:.3f}]"
        direct = ("–" if pd.isna(r["direct_ACR"]) else
                  f"{r['direct_ACR']:.3f} [{r['direct_ACR_low']:.3f}, {r['direct_ACR_high']:.3f}]")
        rows.append([
            r["generation"], r["arch"], r["teacher"] or "–", r["status"], _f(r["hours"], ".4f"),
            _f(r["cumulative_hours"], ".4f"), _f(r["images"], ".0f"), _f(r["N"], ",.0f"), acr,
            _f(r["acc@0.25"]), _f(r["acc@0.50"]), _f(r["acc@0.75"]), _f(r["acc@1.00"]),
            _f(r["agreement"]), _f(r["mean_abs_radius_diff"]), direct])
    return "\n".join(markdown_table(head, rows)) + "\n"


def write_chains(store: ResultsStore, out_dir: Path) -> dict[str, list[Path]]:
    """``chain-<name>.csv/.md/.png/.pdf`` per saved chain; ``{"chains": figures, "files": tables}``."""

    figures: list[Path] = []
    files: list[Path] = []
    for table in chain_tables(store):
        name = str(table["chain"].iloc[0])
        files.append(atomic_write_bytes(out_dir / f"{name}.csv", table.to_csv(index=False).encode()))
        files.append(atomic_write_bytes(out_dir / f"{name}.md", chain_markdown(table).encode()))
        figures += plot_chain(table, out_dir / name)
    return {"chains": figures, "files": files} if files else {}


def chain_section(store: ResultsStore, out_dir: Path) -> list[str]:
    """REPORT.md's section: each chain's table and figure."""
    lines = ["## Recursive CRT: chains of generations", ""]
    chains = saved_chains(store.root)
    if not chains:
        return lines + ["No data: no chain in the store (`crt-bench chain --teacher RUN --arch A --arch B ...`).", ""]
    lines += ["Generation k+1 is trained with CRT from generation k's student. Agreement: fraction of the images "
              "certified for both the link and the root teacher on which their smoothed predictions agree "
              "(abstentions included); radius difference on the same images. Reference: the direct CRT from the "
              "root to the same architecture, where certified. Every number comes from per-image rows.", ""]
    for chain in chains:
        name = chain["name"]
        table = chain_table(store, chain)
        lines += [f"### {name}", "", chain_markdown(table).rstrip(), ""]
        if (Path(out_dir) / f"{name}.png").is_file():
            lines += [f"![{name}]({name}.png)", ""]
    return lines


__all__ = ["chain_markdown", "chain_section", "chain_tables", "plot_chain", "write_chains"]
