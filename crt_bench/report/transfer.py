"""The report's certificate-transfer section: each transferred certificate beside the student's own CERTIFY."""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from crt_bench.analysis.transfer import flat_transfer_table, transfer_table
from crt_bench.core.atomic import atomic_write_bytes
from crt_bench.report.markdown import markdown_table
from crt_bench.store.store import ResultsStore

TRANSFER_STEM = "certificate_transfer"


def _seconds(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.3f}"


def transfer_markdown(table: pd.DataFrame) -> list[str]:
    header = ["student", "seed", "from teacher", "images", "n_p", "CERTIFY s/image", "transfer s/image", "speed-up",
              "CERTIFY ACR [95% CI]", "transfer ACR [95% CI]", "transfer - CERTIFY ACR (paired)", "radius changed",
              "disagreement rate"]
    rows = [[r.student, "" if pd.isna(r.seed) else int(r.seed), r.teacher, r.images, r.n_p,
             _seconds(r.plain_seconds_per_image), _seconds(r.transfer_seconds_per_image),
             "" if math.isnan(r.speedup) else f"{r.speedup:.2f}x", r.plain_acr.format(), r.transfer_acr.format(),
             "" if r.transfer_minus_plain is None else r.transfer_minus_plain.format("+.3f"),
             f"{r.radius_changed:.0%}", "" if math.isnan(r.disagreement_rate) else f"{r.disagreement_rate:.3f}"]
            for r in table.itertuples()]
    return markdown_table(header, rows)


def write_transfer(store: ResultsStore, out_dir: Path) -> list[Path]:
    table = transfer_table(store)
    if table.empty:
        return []
    csv = atomic_write_bytes(Path(out_dir) / f"{TRANSFER_STEM}.csv", flat_transfer_table(table).to_csv(index=False).encode())
    md = atomic_write_bytes(Path(out_dir) / f"{TRANSFER_STEM}.md", ("\n".join(transfer_markdown(table)) + "\n").encode())
    return [csv, md]


def transfer_section(store: ResultsStore) -> list[str]:
    table = transfer_table(store)
    if table.empty:
        return []
    return ["## Certificate transfer: certifying a student from its teacher's certificate", "",
            "Incremental randomized smoothing (Ugare et al., ICLR 2024): for each image the teacher certified, "
            "n_p fresh noisy copies go through teacher and student; zeta is the one-sided Clopper-Pearson upper "
            "bound (alpha_zeta) of their disagreement rate, and the student's radius is "
            "sigma * Phi^-1(pA_lower(teacher) - zeta) for the teacher's class, abstaining where that is not above "
            "1/2 (total failure probability alpha + alpha_zeta). Beside it, the same student's own CERTIFY on the "
            "same images. Seconds per image are measured (the transfer's include both models' forwards); ACR "
            "intervals are 95% bootstrap intervals over the images; \"radius changed\" counts images whose "
            "certified class or radius differs.", "", *transfer_markdown(table), ""]


__all__ = ["transfer_markdown", "transfer_section", "write_transfer"]
