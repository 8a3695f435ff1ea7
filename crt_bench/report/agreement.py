"""How the certificates were computed: the bf16 / compiled forward's agreement with fp32, and the models left
uncertified.

The agreement table is the ``agreement`` table of the store (:mod:`crt_bench.certify.agreement`), one line per
check; the uncertified list names every finished run without a CERTIFY row (a plan that certifies only what the
report uses, e.g. the paper and cpu-full profiles' Gaussian students and the standard classifiers of denoised
smoothing, which are certified only as part of their denoised runs).
"""
from __future__ import annotations

import pandas as pd

from crt_bench.core.states import RunStatus
from crt_bench.report.markdown import markdown_table
from crt_bench.store.store import ResultsStore

TITLE = "## Certification precision: agreement with fp32, and models not certified"


def agreement_lines(agreement: pd.DataFrame, runs: pd.DataFrame) -> list[str]:
    """The agreement checks as a markdown table (empty list without checks)."""
    if agreement.empty:
        return []
    names = _names(runs)
    rows = [[names.get(r.run_id, r.run_id), r.precision + ("+compile" if r.compile else ""), f"{r.n:,}", r.images,
             f"{r.same_predict:.1%}", f"{r.radius_diff_mean:.4f}", f"{r.radius_diff_max:.4f}",
             f"{r.seconds_per_image:.3g} / {r.reference_seconds_per_image:.3g}", r.device]
            for r in agreement.itertuples()]
    return ["Each certified model's first images certified again in IEEE fp32 with the same noise (the papers' "
            "precision): the share with the same prediction (abstentions included) and the absolute difference "
            "of the certified radii. Measured.", "",
            *markdown_table(["model", "precision", "N", "images", "same prediction", "radius diff mean",
                             "radius diff max", "s/image (this / fp32)", "device"], rows), ""]


def uncertified_lines(runs: pd.DataFrame, certified: set[str]) -> list[str]:
    """The finished runs without a certification, one line naming them (empty list when every run has one)."""
    if runs.empty or "status" not in runs:
        return []
    done = runs[(runs["status"] == RunStatus.FINISHED.value) & ~runs["run_id"].isin(certified)]
    if done.empty:
        return []
    names = sorted(_names(done).values())
    return [f"Trained but not certified ({len(names)}: the verdict and the tables do not use their certificates, "
            f"so the plan spends no GPU time on them): {', '.join(names)}.", ""]


def agreement_section(store: ResultsStore) -> list[str]:
    """The report's section; nothing when the store has neither an agreement check nor an uncertified run."""
    runs = store.runs()
    certify = store.read("certify", columns=["run_id"])
    certified = set(certify["run_id"]) if not certify.empty else set()
    body = agreement_lines(store.read("agreement"), runs) + uncertified_lines(runs, certified)
    return [TITLE, "", *body] if body else []


def _names(runs: pd.DataFrame) -> dict[str, str]:
    """run id -> "method arch seed S" (the teacher's arch after an arrow for CRT)."""
    out = {}
    for r in runs.to_dict("records"):
        teacher = r.get("teacher_arch")
        out[r["run_id"]] = (f"{r.get('method')} {r.get('arch')} seed {r.get('seed')}"
                            + (f" <- {teacher}" if isinstance(teacher, str) and teacher else ""))
    return out
