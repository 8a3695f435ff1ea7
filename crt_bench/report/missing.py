"""The cells a grid did not fill, and why: read from the last grid's outcome (``grid_status.json``).

A report that silently leaves out a failed SmoothMix student reads as if the experiment had none; this
section names every job of the last ``reproduce``/``sweep`` that did not finish, with its error and log.
"""
from __future__ import annotations

from pathlib import Path

from crt_bench.core.states import DONE_STATES
from crt_bench.report.markdown import markdown_table
from crt_bench.store.grid_status import read_grid_status


def missing_section(results: str | Path) -> list[str]:
    """Markdown lines: nothing when every job of the last grid finished (or no grid ran here)."""

    status = read_grid_status(results)
    if status.empty:
        return []
    missing = status[~status["state"].isin(DONE_STATES)]
    if missing.empty:
        return []
    lines = ["## Missing cells", "",
             f"{len(missing)} of {len(status)} jobs of the last grid did not finish, so their rows are absent from "
             "every table and figure below. Re-run the same command to retry them (finished work is kept).", "",
             *markdown_table(["job", "state", "why", "log"],
                             [[f"`{row.key}`", row.state, row.error or "", f"`{row.log}`" if row.log else ""]
                              for row in missing.itertuples()])]
    return [*lines, ""]
