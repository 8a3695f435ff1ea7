"""Commands that read the results: ``summary``, ``leaderboard``, ``plot``; and ``compact``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from crt_bench.cli.options import JsonOpt, ReadWriteResultsDirArg, ResultsDirArg
from crt_bench.cli.output import out, print_json
from crt_bench.core.errors import CrtBenchError

log = logging.getLogger("crt_bench.cli")


def summary(
    results_dir: ReadWriteResultsDirArg = Path("results"),
    csv: Annotated[Optional[Path], typer.Option(help="also write the table as CSV here")] = None,
    json: JsonOpt = False,
) -> None:
    """Certified accuracy at r = 0, 0.25, ..., 2.25 and ACR of every certification and imported log."""
    from crt_bench.analysis.summary import summary_table
    from crt_bench.cli.render import rich_summary
    from crt_bench.core.atomic import atomic_write_bytes
    from crt_bench.store.store import ResultsStore

    df = summary_table(ResultsStore(results_dir))
    if df.empty:
        raise CrtBenchError(f"no certification results in {results_dir}; run `crt-bench certify RUN` first")
    if json:
        print_json(df.to_dict(orient="records"))
    else:
        out.print(rich_summary(df))
    csv = csv or results_dir / "summary.csv"
    atomic_write_bytes(csv, df.to_csv(index=False).encode())
    log.info(f"written {csv}")


def leaderboard(
    results_dir: ResultsDirArg = Path("results"),
    out_dir: Annotated[Path, typer.Option("--out", help="where LEADERBOARD.md, figures and entries/ go")] = Path(
        "plots/leaderboard"),
    merge: Annotated[list[Path], typer.Option("--merge", help="a folder of JSON entries to add (repeatable)")] = [],
    json: JsonOpt = False,
) -> None:
    """Pareto frontier of (training hours, ACR) per dataset, sigma, device, N and certified images."""
    import pandas as pd

    from crt_bench.analysis.leaderboard_entries import entries_from_store, missing_from_store, read_entries
    from crt_bench.analysis.leaderboard_entries import merge as merge_entries
    from crt_bench.report.leaderboard import write_leaderboard
    from crt_bench.store.store import ResultsStore

    store = ResultsStore(results_dir)
    entries = merge_entries(entries_from_store(store), *[read_entries(d) for d in merge])
    if not entries:
        raise CrtBenchError(f"no certification in {results_dir} or the merged folders: nothing to rank")
    written = write_leaderboard(entries, out_dir, missing_from_store(store))
    markdown, csv = written["markdown"]
    if json:  # the ranked rows of every group, as leaderboard.csv holds them
        print_json(pd.read_csv(csv).to_dict(orient="records") if csv.stat().st_size > 1 else [])
    else:
        out.print(markdown.read_text())
    log.info(f"written {markdown}, {len(written['figures'])} figure file(s), "
             f"{len(written['entries'])} JSON entries in {out_dir / 'entries'}")


def plot(
    results_dir: ResultsDirArg = Path("results"),
    out_dir: Annotated[Path, typer.Option("--out", help="where tables and figures go")] = Path("plots"),
    sigma: float = 0.25,
) -> None:
    """Every table and figure of the paper from a results directory, plus REPORT.md."""
    from crt_bench.report.build import build_all

    written = build_all(results_dir, out_dir, sigma=sigma)
    if not written:
        raise CrtBenchError(f"nothing to plot in {results_dir}: no timing, training or certification results yet")
    slowdown = out_dir / "slowdown.md"
    if slowdown.is_file():
        out.print(slowdown.read_text())


def compact(results_dir: ReadWriteResultsDirArg = Path("results")) -> None:
    """Merge each run's table parts into one file (and move a store of older crt-bench into partitions).

    Runs and certifications compact their own parts when they finish; this does the rest. Run it when
    no grid or run is writing to RESULTS_DIR.
    """
    from crt_bench.store.store import ResultsStore

    before, after = ResultsStore(results_dir).compact_all()
    out.print(f"{before} parts -> {after} parts")
