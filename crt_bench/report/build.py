"""Everything ``crt-bench plot`` writes, from whatever a results directory holds."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from crt_bench.analysis.costs import measured_costs
from crt_bench.analysis.evidence import evidence_frame, student_evidence
from crt_bench.analysis.summary import summary_table
from crt_bench.core.atomic import atomic_write_bytes
from crt_bench.report.beyond import beyond_paper_outputs
from crt_bench.report.convergence import plot_training_curves, training_curves
from crt_bench.report.curves import certified_curves, plot_curves
from crt_bench.report.document import write_report
from crt_bench.report.figures import cumulative_hours, plot_costs_figure, plot_cumulative
from crt_bench.report.pa_distribution import pa_distribution, plot_pa_ecdf
from crt_bench.report.paper_tables import acr_markdown, acr_table, table1, table1_markdown
from crt_bench.report.slowdown import primary_rows, slowdown_markdown, slowdown_table
from crt_bench.store.store import ResultsStore

log = logging.getLogger(__name__)


class _Outputs:
    """What ``build_all`` has written so far, by sort (``files`` for tables, a figure's key for its files)."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.written: dict[str, list[Path]] = {}

    def save(self, name: str, text: str) -> None:
        self.written.setdefault("files", []).append(atomic_write_bytes(self.out_dir / name, text.encode()))

    def table(self, stem: str, frame: pd.DataFrame, markdown: Callable[[pd.DataFrame], str] | None = None) -> bool:
        """``stem.csv`` (and ``stem.md`` when ``markdown`` is given) unless ``frame`` is empty; True if written."""
        if frame.empty:
            return False
        self.save(f"{stem}.csv", frame.to_csv(index=False))
        if markdown is not None:
            self.save(f"{stem}.md", markdown(frame))
        return True


def build_all(results: str | Path, out_dir: str | Path, *, sigma: float = 0.25, profile_note: str = "") -> dict:
    """Tables (markdown + CSV), figures (PNG + PDF) and REPORT.md; sections without data are skipped."""
    store, out_dir = ResultsStore(results), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = _Outputs(out_dir)
    slowdown = slowdown_table(store)
    costs = measured_costs(store)
    out.table("measured_costs", costs)
    if out.table("slowdown", slowdown, slowdown_markdown):
        data = cumulative_hours(primary_rows(slowdown), sigma=sigma)
        if out.table("cumulative_training_time", data):
            out.written["figure1"] = plot_cumulative(data, out_dir, costs=costs)[0]
    if "figure1" not in out.written and not costs.empty:  # no probes: the measured panel alone
        out.written["figure1"] = plot_costs_figure(costs, out_dir)
    out.table("summary", summary_table(store))
    _paper_outputs(store, out, sigma)
    if out.written:  # an empty store keeps the CLI's "nothing to plot" error
        out.written["report"] = [write_report(store, out_dir, figures=dict(out.written), profile_note=profile_note)]
    for path in [p for paths in out.written.values() for p in paths]:
        log.debug(f"written {path}")
    return out.written


def _paper_outputs(store: ResultsStore, out: _Outputs, sigma: float) -> None:
    """Figure 2, the ACR table, the verdict's evidence, the training curves, Table 1 and what goes beyond the paper."""
    curves = certified_curves(store, sigma=sigma)
    if out.table("certified_accuracy", curves):
        out.written["figure2"] = plot_curves(curves, out.out_dir)[0]
    pa = pa_distribution(store)
    if out.table("pa_lower", pa):
        out.written["pa_ecdf"] = plot_pa_ecdf(pa, out.out_dir)
    out.table("acr", acr_table(store), acr_markdown)
    out.table("verdict_evidence", evidence_frame(student_evidence(store)))
    trained = training_curves(store)
    if out.table("training_curves", trained):
        out.written["training_curves"] = plot_training_curves(trained, out.out_dir)
    out.table("table1", table1(store), table1_markdown)
    beyond = beyond_paper_outputs(store, out.out_dir)
    for path in beyond.pop("files", []):
        out.written.setdefault("files", []).append(path)
    out.written.update(beyond)
