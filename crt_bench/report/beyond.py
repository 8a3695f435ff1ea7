"""The report's sections beyond the paper: certificate transfer, recursive-CRT chains and the cost-robustness
leaderboard.

One entry point for ``build_all`` (files) and one for REPORT.md (sections), so the shared report modules
gain two lines each.
"""
from __future__ import annotations

from pathlib import Path

from crt_bench.analysis.leaderboard_entries import entries_from_store, missing_from_store
from crt_bench.report.chains import chain_section, write_chains
from crt_bench.report.leaderboard import LEADERBOARD_DIR, leaderboard_section, write_leaderboard
from crt_bench.report.transfer import transfer_section, write_transfer
from crt_bench.store.store import ResultsStore

FIGURE_KEYS = ("chains", "leaderboard")  # keys of build_all's dict whose sections are written here


def beyond_paper_outputs(store: ResultsStore, out_dir: Path) -> dict[str, list[Path]]:
    """Chain tables and figures (``out_dir``), and the leaderboard (``out_dir/leaderboard/``)."""

    written = write_chains(store, Path(out_dir))
    transfer_files = write_transfer(store, Path(out_dir))
    if transfer_files:
        written["files"] = [*written.get("files", []), *transfer_files]
    entries = entries_from_store(store)
    if entries:
        board = write_leaderboard(entries, Path(out_dir) / LEADERBOARD_DIR, missing_from_store(store))
        written["leaderboard"] = board["figures"]
        written["files"] = [*written.get("files", []), *board["markdown"]]
    return written


def beyond_paper_sections(store: ResultsStore, out_dir: Path) -> list[str]:

    return [*transfer_section(store), *chain_section(store, Path(out_dir)), *leaderboard_section(Path(out_dir))]


__all__ = ["FIGURE_KEYS", "beyond_paper_outputs", "beyond_paper_sections"]
