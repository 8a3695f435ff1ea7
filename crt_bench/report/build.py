"""Everything ``crt-bench plot`` writes, from whatever a results directory holds."""
from __future__ import annotations

import logging
from pathlib import Path


from crt_bench.analysis.evidence import evidence_frame, student_evidence
from crt_bench.analysis.summary import summary_table
from crt_bench.core.atomic import atomic_write_bytes
from crt_bench.report.beyond import beyond_paper_outputs
from crt_bench.report.convergence import plot_training_curves, training_curves
from crt_bench.report.curves import certified_curves, plot_curves
from crt_bench.report.document import write_report
from crt_bench.report.figures import cumulative_hours, plot_cumulative
from crt_bench.report.paper_tables import acr_markdown, acr_table, table1, table1_markdown
from crt_bench.report.slowdown import slowdown_markdown, slowdown_table
from crt_bench.store.store import ResultsStore

log = logging.getLogger(__name__)


def build_all(results: str | Path, out_dir: str | Path, *, sigma: float = 0.25, profile_note: str = "") -> dict:
    """Tables (markdown + CSV), figures (PNG + PDF) and REPORT.md; sections without data are skipped."""
    store, out_dir = ResultsStore(results), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}

    def save(name: str, text: str) -> Path:
        path = atomic_write_bytes(out_dir / name, text.encode())
        written.setdefault("files", []).append(path)
        return path

    slowdown = slowdown_table(store)
    if not slowdown.empty:
        save("slowdown.csv", slowdown.to_csv(index=False))
        save("slowdown.md", slowdown_markdown(slowdown))
        data = cumulative_hours(slowdown, sigma=sigma)
        if not data.empty:
            save("cumulative_training_time.csv", data.to_csv(index=False))
            written["figure1"] = plot_cumulative(data, out_dir)[0]
    summary = summary_table(store)
    if not summary.empty:
        save("summary.csv", summary.to_csv(index=False))
    written.update(_paper_outputs(store, out_dir, sigma, profile_note, written))
    for path in [p for paths in written.values() for p in paths]:
        log.debug(f"written {path}")
    return written


def _paper_outputs(store: ResultsStore, out_dir: Path, sigma: float, profile_note: str,
                   written: dict[str, list[Path]]) -> dict[str, list[Path]]:
    """Figure 2, the ACR table, Table 1 and REPORT.md."""

    new: dict[str, list[Path]] = {}
    files: list[Path] = []

    def save(name: str, text: str) -> None:
        files.append(atomic_write_bytes(out_dir / name, text.encode()))

    curves = certified_curves(store, sigma=sigma)
    if not curves.empty:
        save("certified_accuracy.csv", curves.to_csv(index=False))
        new["figure2"] = plot_curves(curves, out_dir)[0]
    acr = acr_table(store)
    if not acr.empty:
        save("acr.csv", acr.to_csv(index=False))
        save("acr.md", acr_markdown(acr))

    evidence = evidence_frame(student_evidence(store))
    if not evidence.empty:
        save("verdict_evidence.csv", evidence.to_csv(index=False))

    trained = training_curves(store)
    if not trained.empty:
        save("training_curves.csv", trained.to_csv(index=False))
        new["training_curves"] = plot_training_curves(trained, out_dir)
    t1 = table1(store)
    if not t1.empty:
        save("table1.csv", t1.to_csv(index=False))
        save("table1.md", table1_markdown(t1))

    beyond = beyond_paper_outputs(store, out_dir)
    files += beyond.pop("files", [])
    new.update(beyond)
    if files:
        new["files"] = [*written.get("files", []), *files]
    if written or new:  # an empty store keeps the CLI's "nothing to plot" error
        new["report"] = [write_report(store, out_dir, figures={**written, **new}, profile_note=profile_note)]
    return new
