"""From the store to the verdict: per-student evidence with bootstrap intervals, and its REPORT.md section.

For each (architecture, sigma, dataset, profile) with a certified CRT student and a certified SmoothMix
model, the newest certification of each is paired with the CRT student's teacher (its
``teacher_run_id``) and with the noisy-test-accuracy curves of the three runs (``epochs`` table).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from crt_bench.analysis.select import certifications, newest_per_line
from crt_bench.analysis.uncertainty import acr_interval, paired_acr_difference, paired_images
from crt_bench.analysis.verdict import SETTINGS, StudentEvidence
from crt_bench.store.store import ResultsStore

PLATEAU_TAIL = 0.25  # the last quarter of the epochs ...
PLATEAU_GAIN = 0.02  # ... may improve the best noisy test accuracy by at most this much
MIN_EPOCHS = 4  # fewer epochs cannot show a plateau


def plateau_status(accuracy: Sequence[float], *, tail: float = PLATEAU_TAIL, gain: float = PLATEAU_GAIN,
                   min_epochs: int = MIN_EPOCHS) -> str:
    """``plateaued``, ``rising`` (the last ``tail`` of the epochs still gained more than ``gain``) or ``too short``."""
    acc = [float(a) for a in accuracy if not (isinstance(a, float) and math.isnan(a))]
    if len(acc) < max(min_epochs, 2):
        return "too short"
    k = max(1, math.ceil(len(acc) * tail))
    return "rising" if max(acc[-k:]) - max(acc[:-k]) > gain else "plateaued"


def run_plateaus(store: ResultsStore) -> dict[str, str]:
    """run_id -> plateau status of its per-epoch noisy test accuracy (the store keeps the newest row per epoch)."""
    epochs = store.read("epochs")
    if epochs.empty:
        return {}
    epochs = epochs.sort_values(["run_id", "epoch"])
    return {run: plateau_status(part["noisy_test_acc"].tolist()) for run, part in epochs.groupby("run_id")}


def _triple(interval) -> tuple[float, float, float]:
    return (interval.estimate, interval.low, interval.high)


def student_evidence(store: ResultsStore) -> list[StudentEvidence]:
    meta, rows = certifications(store)
    lines = newest_per_line(meta)
    if lines.empty:
        return []
    by_run = {r["run_id"]: r for _, r in meta.iterrows()}
    plateaus = run_plateaus(store)
    out = []
    for (arch, sigma, dataset, profile), part in lines.groupby(["arch", "sigma", "dataset", "profile"], sort=False):
        # The claim is about CRT from a robust (SmoothMix) teacher; recursive chains (a CRT student as the
        # teacher) have a section of their own (crt_bench.grid.chain) and do not vote here.
        crt = part[(part["method"] == "crt") & (part["teacher_method"] != "crt")]
        sm = part[part["method"] == "smoothmix"]
        if crt.empty or sm.empty:
            continue
        s = sm.iloc[-1]
        for _, c in crt.iterrows():
            if paired_images(rows[c["cert_id"]], rows[s["cert_id"]]) == 0:
                continue
            teacher = by_run.get(c["teacher_run_id"])
            teacher_acr = _triple(acr_interval(rows[teacher["cert_id"]])) if teacher is not None else None
            teacher_s = c["teacher_train_seconds"] if not math.isnan(c["teacher_train_seconds"]) else \
                c["teacher_run_train_seconds"]
            named = [(f"CRT {arch}", c["run_id"]), (f"SmoothMix {arch}", s["run_id"])]
            if c["teacher_run_id"]:
                named.append((f"teacher {c['teacher'] or c['teacher_run_id']}", c["teacher_run_id"]))
            under = tuple(f"{name} ({plateaus.get(run, 'no curve')})" for name, run in named
                          if plateaus.get(run, "no curve") != "plateaued")
            out.append(StudentEvidence(
                arch=arch if len(crt) == 1 else f"{arch} <- {c['teacher']}",
                crt_acr=_triple(acr_interval(rows[c["cert_id"]])), smoothmix_acr=_triple(acr_interval(rows[s["cert_id"]])),
                difference=_triple(paired_acr_difference(rows[c["cert_id"]], rows[s["cert_id"]])),
                smoothmix_hours=float(s["train_seconds"]) / 3600, crt_hours=float(c["train_seconds"]) / 3600,
                teacher_hours=float(teacher_s) / 3600 if not math.isnan(teacher_s) else float("nan"),
                teacher_acr=teacher_acr, under_trained=under,
                images=paired_images(rows[c["cert_id"]], rows[s["cert_id"]])))
    return out


def evidence_frame(evidence: list[StudentEvidence]) -> pd.DataFrame:
    """The evidence as a flat table (CSV beside REPORT.md)."""
    rows = []
    for ev in evidence:
        row = {"student": ev.arch, "images": ev.images, "smoothmix_hours": ev.smoothmix_hours,
               "crt_hours": ev.crt_hours, "teacher_hours": ev.teacher_hours, "crt_over_teacher_acr": ev.teacher_ratio,
               "speedup_pretrained": ev.speedup(SETTINGS[0]), "speedup_proxy": ev.speedup(SETTINGS[1]),
               "not_plateaued": "; ".join(ev.under_trained)}
        for name, t in (("crt_acr", ev.crt_acr), ("smoothmix_acr", ev.smoothmix_acr), ("teacher_acr", ev.teacher_acr),
                        ("crt_minus_smoothmix", ev.difference)):
            t = t or (float("nan"),) * 3
            row.update({name: t[0], f"{name}_low": t[1], f"{name}_high": t[2]})
        rows.append(row)
    return pd.DataFrame(rows)
