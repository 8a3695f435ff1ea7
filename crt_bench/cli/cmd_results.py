"""Commands that read the results: ``summary``, ``leaderboard``, ``plot``; and ``compact``."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from crt_bench.cli.output import err, out
from crt_bench.core.errors import CrtBenchError


def summary(
    results_dir: Annotated[Path, typer.Argument(help="results directory")] = Path("results"),
    csv: Annotated[Optional[Path], typer.Option(help="also write the table as CSV here")] = None,
) -> None:
    """Certified accuracy at r = 0, 0.25, ..., 2.25 and ACR of every certification and imported log."""
    from crt_bench.analysis.summary import summary_table
    from crt_bench.cli.render import rich_summary
    from crt_bench.core.atomic import atomic_write_bytes
    from crt_bench.store.store import ResultsStore

    if not results_dir.is_dir():
        raise CrtBenchError(f"results directory {results_dir} does not exist")
    df = summary_table(ResultsStore(results_dir))
    if df.empty:
        raise CrtBenchError(f"no certification results in {results_dir}; run `crt-bench certify RUN` first")
    out.print(rich_summary(df))
    csv = csv or results_dir / "summary.csv"
    atomic_write_bytes(csv, df.to_csv(index=False).encode())
    err.print(f"written {csv}")


def leaderboard(
    results_dir: Annotated[Path, typer.Argument(help="results directory")] = Path("results"),
    out_dir: Annotated[Path, typer.Option("--out", help="where LEADERBOARD.md, figures and entries/ go")] = Path(
        "plots/leaderboard"),
    merge: Annotated[list[Path], typer.Option("--merge", help="a folder of JSON entries to add (repeatable)")] = [],
) -> None:
    """Pareto frontier of (training hours, ACR) per dataset, sigma, device, N and certified images."""
    from crt_bench.analysis.leaderboard_entries import entries_from_store, missing_from_store, read_entries
    from crt_bench.analysis.leaderboard_entries import merge as merge_entries
    from crt_bench.report.leaderboard import write_leaderboard
    from crt_bench.store.store import ResultsStore

    if not results_dir.is_dir():
        raise CrtBenchError(f"results directory {results_dir} does not exist")
    store = ResultsStore(results_dir)
    entries = merge_entries(entries_from_store(store), *[read_entries(d) for d in merge])
    if not entries:
        raise CrtBenchError(f"no certification in {results_dir} or the merged folders: nothing to rank")
    written = write_leaderboard(entries, out_dir, missing_from_store(store))
    out.print((out_dir / "LEADERBOARD.md").read_text(), markup=False, highlight=False)
    err.print(f"written {written['markdown'][0]}, {len(written['figures'])} figure file(s), "
              f"{len(written['entries'])} JSON entries in {out_dir / 'entries'}")


def plot(
    results_dir: Annotated[Path, typer.Argument(help="results directory")] = Path("results"),
    out_dir: Annotated[Path, typer.Option("--out", help="where tables and figures go")] = Path("plots"),
    sigma: float = 0.25,
) -> None:
    """Every table and figure of the paper from a results directory, plus REPORT.md."""
    from crt_bench.report.build import build_all

    if not results_dir.is_dir():
        raise CrtBenchError(f"results directory {results_dir} does not exist")
    written = build_all(results_dir, out_dir, sigma=sigma)
    if not written:
        raise CrtBenchError(f"nothing to plot in {results_dir}: no timing, training or certification results yet")
    slowdown = out_dir / "slowdown.md"
    if slowdown.is_file():
        out.print(slowdown.read_text(), markup=False, highlight=False)


def compact(
    results_dir: Annotated[Path, typer.Argument(help="results directory")] = Path("results"),
) -> None:
    """Merge each run's table parts into one file (and move a store of older crt-bench into partitions).

    Runs and certifications compact their own parts when they finish; this does the rest. Run it when
    no grid or run is writing to RESULTS_DIR.
    """
    from crt_bench.store.store import ResultsStore

    if not results_dir.is_dir():
        raise CrtBenchError(f"results directory {results_dir} does not exist")
    before, after = ResultsStore(results_dir).compact_all()
    out.print(f"{before} parts -> {after} parts", markup=False, highlight=False)
