"""REPORT.md: one markdown document with every table and figure of the reproduction.

Sections, in order: a header (profiles, devices, git commits, what is measured and what projected),
the slowdown table, Figure 1 (cumulative training hours), Figure 2 (certified accuracy vs radius),
the ACR table, Table 1 (proxy-teacher CRT vs SmoothMix, beside the paper), and the published logs.
A section without data says so in one line.
"""
from __future__ import annotations

import math
import os
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

from crt_bench.analysis.costs import reuse_competitors
from crt_bench.analysis.evidence import student_evidence
from crt_bench.analysis.metrics import acr, certified_accuracy
from crt_bench.analysis.select import certifications
from crt_bench.core.atomic import atomic_write_bytes
from crt_bench.core.constants import IMPORT_PREFIX, TABLE_RADII
from crt_bench.core.tf32 import device_labels
from crt_bench.report.agreement import agreement_section
from crt_bench.report.beyond import FIGURE_KEYS, beyond_paper_sections
from crt_bench.report.fixed_radii import fixed_radii_markdown
from crt_bench.report.imagenet import imagenet_section
from crt_bench.report.markdown import markdown_table
from crt_bench.report.missing import missing_section
from crt_bench.report.pa_distribution import PA_TITLE
from crt_bench.report.paper_tables import acr_markdown, acr_table, table1, table1_markdown
from crt_bench.report.slowdown import fidelity_markdown, slowdown_markdown, slowdown_table
from crt_bench.report.verdict_section import competitors_markdown, verdict_markdown
from crt_bench.store.store import ResultsStore

REPORT_FILE = "REPORT.md"
FIGURE_TITLES = {
    "figure1": ("Figure 1: cumulative training hours per new architecture; measured training + certification hours "
                "per certified model",
                ("No data: Figure 1 was not drawn (it needs timing probes of every method for the architectures; "
                 "`crt-bench time`).")),
    "training_curves": ("Convergence: training loss and noisy test accuracy per epoch of every trained run",
                        "No data: no per-epoch rows of trained runs in the store."),
    "figure2": ("Figure 2: certified accuracy vs L2 radius, CRT students vs SmoothMix",
                ("No data: Figure 2 was not drawn (it needs a certified CRT run and a certified SmoothMix run of the "
                 "same architecture).")),
    "pa_ecdf": (PA_TITLE, "No data: no certification kept its per-image p_A lower bounds (certify rows of "
                          "schema 4 onwards)."),
}


def _values(frames: list[tuple[pd.DataFrame, str]]) -> list[str]:
    seen: dict[str, None] = {}
    for df, column in frames:
        if not df.empty and column in df:
            for value in df[column].dropna().astype(str):
                if value and value != "unknown":
                    seen[value] = None
    return list(seen)


def _header(store: ResultsStore, runs: pd.DataFrame, timing: pd.DataFrame, certify: pd.DataFrame,
            slowdown: pd.DataFrame, profile_note: str) -> list[str]:
    none = "none recorded"
    profiles = _values([(runs, "profile"), (timing, "profile")])
    devices = _values([(frame.assign(device=device_labels(frame)), "device") for frame in (runs, timing, certify)
                       if not frame.empty and "device" in frame])
    commits = _values([(runs, "git_commit"), (timing, "git_commit"), (certify, "git_commit")])
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    lines = ["# crt-bench report: Accelerating Certified Robustness Training via Knowledge Transfer (CRT)", "",
             f"Generated {stamp} from `{store.root}`.", "",
             f"- Profiles: {', '.join(profiles) or none}",
             f"- Devices: {', '.join(devices) or none}",
             f"- Git commits: {', '.join(commits) or none}",
             (f"- Runs: {len(runs)}; certifications: {certify['cert_id'].nunique() if not certify.empty else 0}; "
              f"timing probes: {len(timing)}"), ""]
    if profile_note.strip():
        lines += [profile_note.strip(), ""]
    measured = int((slowdown["hours_basis"] == "measured").sum()) if not slowdown.empty else 0
    projected = len(slowdown) - measured
    lines += [("**Measured vs projected.** Measured: training hours of finished runs (wall-clock, in the ACR "
               "table and Table 1, a dedicated proxy teacher's hours included) and every certified accuracy and "
               "ACR (computed from the per-image CERTIFY rows). Projected: slowdown-table and Figure 1 hours "
               "marked \"projected\" (median probe epoch time x the recipe's epochs). Quoted, not measured: the "
               f"paper's numbers. Slowdown table: {measured} row(s) measured, {projected} projected."), ""]
    return lines


def _slowdown_section(timing: pd.DataFrame, slowdown: pd.DataFrame) -> list[str]:
    lines = ["## Slowdown vs Gaussian training (150 epochs, batch 256), and standard training where timed", ""]
    if timing.empty:
        return lines + ["No data: no timing probes in the store (`crt-bench time`).", ""]
    if slowdown.empty:
        return lines + [("No data: timing probes exist but none has a Gaussian baseline of the same device, arch "
                         "and sigma to divide by."), ""]
    lines += ["Paper (ResNet-110, CIFAR-10, one Volta GPU, fp32, whole runs against standard training): SmoothAdv "
              "46.20x (m=8 T=10), MACER 20.86x, SmoothMix 4.97x.", "", slowdown_markdown(slowdown).rstrip(), ""]
    fidelity = fidelity_markdown(slowdown)
    if fidelity:
        lines += ["## Fidelity of the slowdown table", "",
                  "Per protocol, the paper's three methods: the ratio their passes imply, the one measured, the "
                  "paper's, and the factor that remains; the ratios between two methods do not depend on the "
                  "baseline (paper: SmoothAdv / SmoothMix 9.30, MACER / SmoothMix 4.20).", "", fidelity.rstrip(), ""]
    return lines


def _figure_lines(key: str, paths: list[Path], out_dir: Path) -> list[str]:
    title, missing = FIGURE_TITLES.get(key, (key, f"No data: {key} was not drawn."))
    lines = [f"## {title}", ""]
    paths = [Path(p) for p in paths]
    if not paths:
        return lines + [missing, ""]
    rel = {p.suffix.lower(): os.path.relpath(p, out_dir).replace(os.sep, "/") for p in paths}
    if ".png" in rel:
        lines += [f"![{title}]({rel['.png']})", ""]
    others = [f"[{suffix[1:].upper()}]({path})" for suffix, path in rel.items()]
    return lines + ["Files: " + ", ".join(others), ""]


def _published_section(store: ResultsStore) -> list[str]:
    lines = ["## Published certification logs (imported)", ""]
    meta, rows = certifications(store)
    imported = meta[meta["imported"]] if not meta.empty else meta
    if imported.empty:
        return lines + ["No data: no published logs imported (`crt-bench import-log`).", ""]
    table = []
    for _, m in imported.iterrows():
        part = rows[m["cert_id"]]
        acc = certified_accuracy(part, TABLE_RADII)
        sigma = "?" if math.isnan(m["sigma"]) else f"{m['sigma']:g}"
        table.append([str(m["run_id"]).removeprefix(IMPORT_PREFIX), sigma, m["N"], m["images"],
                      *[f"{v:.3f}" for v in acc], f"{acr(part):.3f}"])
    lines += markdown_table(["name", "sigma", "N", "images", *[f"acc@{r:g}" for r in TABLE_RADII], "ACR"], table)
    return lines + ["", "Recomputed here from the logs' per-image rows (radius >= r and correct)."]


def _verdict_section(store: ResultsStore) -> list[str]:
    """The paper's claim, judged from this store's numbers (crt_bench.analysis.verdict)."""

    lines = ["## Verdict: does CRT match SmoothMix's certified robustness for much less training time?", ""]
    missing: list[str] = []
    evidence = student_evidence(store, missing)
    lines += [verdict_markdown(evidence, missing=missing).rstrip(), ""]
    fixed = fixed_radii_markdown(evidence)
    lines += [fixed.rstrip(), ""] if fixed else []
    competitors = competitors_markdown(reuse_competitors(store))
    return lines + ([competitors.rstrip(), ""] if competitors else [])


def write_report(store: ResultsStore, out_dir: Path, *, figures: dict[str, list[Path]], profile_note: str) -> Path:
    """Write ``out_dir/REPORT.md`` atomically and return its path.

    ``figures`` maps ``"figure1"`` (cumulative training hours) and ``"figure2"`` (certified accuracy
    curves) to the files drawn (PNG and/or PDF); a missing or empty entry gives a "no data" line. Other
    keys holding images get a figure section of their own; any other files (CSV, markdown: e.g. the
    ``"files"`` entry of ``build_all``'s dict) are linked at the end under "Data files". Links are
    relative to ``out_dir``. ``profile_note`` is printed under the header as given.
    """
    out_dir = Path(out_dir)
    runs, timing, certify = store.runs(), store.read("timing"), store.read("certify")
    slowdown = slowdown_table(store) if not timing.empty else pd.DataFrame()
    lines = _header(store, runs, timing, certify, slowdown, profile_note)
    lines += missing_section(store.root)
    lines += _verdict_section(store)
    lines += _slowdown_section(timing, slowdown)
    lines += _figure_lines("figure1", figures.get("figure1", []), out_dir)
    lines += _figure_lines("figure2", figures.get("figure2", []), out_dir)
    lines += _figure_lines("pa_ecdf", figures.get("pa_ecdf", []), out_dir)
    lines += _figure_lines("training_curves", figures.get("training_curves", []), out_dir)
    lines += ["## Certified robustness per method and architecture (ACR)", "", acr_markdown(acr_table(store)).rstrip(), ""]
    lines += ["## Table 1: CRT with a proxy teacher vs SmoothMix", "", table1_markdown(table1(store)).rstrip(), ""]
    lines += agreement_section(store)
    lines += imagenet_section(store)

    lines += beyond_paper_sections(store, out_dir)
    data_files: list[Path] = []
    for key, paths in figures.items():
        if key in FIGURE_TITLES or key in FIGURE_KEYS:
            continue
        if any(Path(p).suffix.lower() in (".png", ".pdf", ".svg") for p in paths):
            lines += _figure_lines(key, paths, out_dir)
        else:
            data_files += [Path(p) for p in paths]
    lines += _published_section(store)
    if data_files:
        links = [os.path.relpath(p, out_dir).replace(os.sep, "/") for p in data_files]
        lines += ["", "## Data files", "", *[f"- [{link}]({link})" for link in dict.fromkeys(links)]]
    path = out_dir / REPORT_FILE
    atomic_write_bytes(path, ("\n".join(lines).rstrip() + "\n").encode())
    return path


__all__ = ["REPORT_FILE", "write_report"]
