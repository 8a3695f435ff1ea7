"""From the store to the verdict: per-student evidence with bootstrap intervals, and its REPORT.md section.

For each (architecture, sigma, dataset, profile) with a certified CRT student and a certified SmoothMix
model, the newest certification of each training seed of each is taken (several seeds: intervals over seeds
and images, :mod:`crt_bench.analysis.seeds`), kept only when it matches the others
(:mod:`crt_bench.analysis.matching`: finished, equal N0, N, alpha, precision, subset, seeds both methods have;
what is left out is named in ``missing``), with the CRT student's teacher (its ``teacher_run_id``; with
several CRT seeds, that of the lowest seed), the under-training guard from the Gaussian-trained student of the
same architecture (:mod:`crt_bench.analysis.training_check`) and the noisy-test-accuracy curves' plateaus
(``epochs`` table; shown, not evidence).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from crt_bench.analysis.fixed_radii import fixed_radii
from crt_bench.analysis.matching import Candidate, describe_key, match
from crt_bench.analysis.select import certifications, newest_per_line
from crt_bench.analysis.seeds import common_images, seed_acrs, seeded_acr_difference, seeded_acr_interval
from crt_bench.analysis.training_check import check_teacher, check_training, last_accuracies
from crt_bench.analysis.uncertainty import acr_interval
from crt_bench.analysis.verdict import SETTINGS, StudentEvidence
from crt_bench.core.errors import CrtBenchError
from crt_bench.data.catalog import dataset_info
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


def run_plateaus(epochs: pd.DataFrame) -> dict[str, str]:
    """run_id -> plateau status of its per-epoch noisy test accuracy (the store keeps the newest row per epoch)."""
    if epochs.empty:
        return {}
    epochs = epochs.sort_values(["run_id", "epoch"])
    return {run: plateau_status(part["noisy_test_acc"].tolist()) for run, part in epochs.groupby("run_id")}


def _triple(interval) -> tuple[float, float, float]:
    return (interval.estimate, interval.low, interval.high)


def _seed_name(name: str, seed: float) -> str:
    return name + (f" seed{int(seed)}" if not math.isnan(seed) and seed else "")


def _gaussian_runs(runs: pd.DataFrame, arch: str, sigma: float, dataset: str, profile: str) -> list[str]:
    """The newest Gaussian-trained run per seed of this architecture, sigma, dataset and profile."""
    if runs.empty:
        return []
    same = runs[(runs["method"] == "gaussian") & (runs["arch"] == arch) & (runs["dataset"] == dataset)
                & (runs["profile"] == profile) & ((runs["sigma"] - sigma).abs() < 1e-9)]
    if same.empty:
        return []
    if "updated" in same:
        same = same.sort_values("updated", kind="stable")
    if "seed" not in same:  # a store written before runs recorded their seed: its newest run
        return same.tail(1)["run_id"].tolist()
    return same.groupby("seed", dropna=False).tail(1)["run_id"].tolist()


def _classes(dataset: str) -> int:
    """The dataset's number of classes; 0 for one the catalog does not know (the teacher is then not checked)."""
    try:
        return dataset_info(dataset).num_classes
    except CrtBenchError:
        return 0


def _states(store: ResultsStore) -> dict[str, str]:
    states = store.certification_states()
    return dict(zip(states["cert_id"], states["status"])) if not states.empty else {}


def _candidates(part: pd.DataFrame, name: str, rows: dict, states: dict[str, str]) -> list[Candidate]:
    return [Candidate(_seed_name(name, r["seed"]), r["method"], r["seed"], r["cert_id"], rows[r["cert_id"]],
                      str(states.get(r["cert_id"], ""))) for _, r in part.iterrows()]


def student_evidence(store: ResultsStore, missing: list[str] | None = None) -> list[StudentEvidence]:
    """The verdict's evidence per cell; ``missing`` (when given) gains one line per certification left out."""
    missing = [] if missing is None else missing
    meta, rows = certifications(store)
    lines = newest_per_line(meta, per_seed=True)
    if lines.empty:
        return []
    by_run = {r["run_id"]: r for _, r in meta.iterrows()}
    runs, epochs = store.runs(), store.read("epochs")
    plateaus, accuracies, states = run_plateaus(epochs), last_accuracies(runs, epochs), _states(store)
    students_of = runs[runs["method"] == "crt"].groupby("teacher_run_id")["run_id"].nunique().to_dict() \
        if not runs.empty and "teacher_run_id" in runs else {}
    out = []
    for (arch, sigma, dataset, profile), part in lines.groupby(["arch", "sigma", "dataset", "profile"], sort=False):
        # The claim is about CRT from a robust (SmoothMix) teacher; recursive chains (a CRT student as the
        # teacher) have a section of their own (crt_bench.grid.chain) and do not vote here.
        crt = part[(part["method"] == "crt") & (part["teacher_method"] != "crt")]
        sm_all = part[part["method"] == "smoothmix"].sort_values("seed", kind="stable")
        if crt.empty or sm_all.empty:
            continue
        gaussian = [accuracies[r] for r in _gaussian_runs(runs, arch, sigma, dataset, profile) if r in accuracies]
        teachers = crt.groupby("teacher", sort=False)
        for _, cs_all in teachers:
            cs_all = cs_all.sort_values("seed", kind="stable")
            kept, key, left_out = match([*_candidates(sm_all, f"SmoothMix {arch}", rows, states),
                                         *_candidates(cs_all, f"CRT {arch}", rows, states)], ["smoothmix", "crt"])
            missing += [f"verdict, {arch}: {why}" for why in left_out]
            ids = {c.cert_id for c in kept}
            cs, sm = cs_all[cs_all["cert_id"].isin(ids)], sm_all[sm_all["cert_id"].isin(ids)]
            if cs.empty or sm.empty:
                missing.append(f"verdict, {arch}: no finished, matching CRT and SmoothMix certifications")
                continue
            c_certs, sm_certs = [rows[c] for c in cs["cert_id"]], [rows[c] for c in sm["cert_id"]]
            if not common_images([*c_certs, *sm_certs]):
                missing.append(f"verdict, {arch}: the CRT and SmoothMix certifications share no image")
                continue
            c = cs.iloc[0]
            teacher = by_run.get(c["teacher_run_id"])
            teacher_acr = _triple(acr_interval(rows[teacher["cert_id"]])) if teacher is not None else None
            teacher_s = c["teacher_train_seconds"] if not math.isnan(c["teacher_train_seconds"]) else \
                c["teacher_run_train_seconds"]
            teacher_name = f"teacher {c['teacher'] or c['teacher_run_id']}"
            named = [(_seed_name(f"CRT {arch}", r["seed"]), r["run_id"]) for _, r in cs.iterrows()]
            named += [(_seed_name(f"SmoothMix {arch}", r["seed"]), r["run_id"]) for _, r in sm.iterrows()]
            if c["teacher_run_id"]:
                named.append((teacher_name, c["teacher_run_id"]))
            rising = tuple(f"{name} ({plateaus.get(run, 'no curve')})" for name, run in named
                           if plateaus.get(run, "no curve") != "plateaued")
            check = check_training(arch, gaussian, accuracies.get(c["teacher_run_id"]), teacher_name)
            teacher_check = check_teacher(accuracies.get(c["teacher_run_id"]), teacher_name, _classes(dataset))
            flagged = tuple(k.text for k in (check, teacher_check) if k.under_trained)
            difference, images = seeded_acr_difference(c_certs, sm_certs)
            out.append(StudentEvidence(
                arch=arch, teacher="" if teachers.ngroups == 1 else str(c["teacher"]),
                crt_acr=_triple(seeded_acr_interval(c_certs)), smoothmix_acr=_triple(seeded_acr_interval(sm_certs)),
                difference=_triple(difference),
                smoothmix_hours=float(sm["train_seconds"].mean()) / 3600,
                crt_hours=float(cs["train_seconds"].mean()) / 3600,
                teacher_hours=float(teacher_s) / 3600 if not math.isnan(teacher_s) else float("nan"),
                teacher_acr=teacher_acr, under_trained=flagged, images=images,
                training_check="; ".join(k.text for k in (check, teacher_check) if k.text), not_plateaued=rising,
                crt_seed_acrs=seed_acrs(c_certs), smoothmix_seed_acrs=seed_acrs(sm_certs),
                guard_missing="" if check.checked else check.text,
                crt_seed_hours=tuple(float(h) / 3600 for h in cs["train_seconds"]),
                smoothmix_seed_hours=tuple(float(h) / 3600 for h in sm["train_seconds"]),
                teacher_students=int(students_of.get(c["teacher_run_id"], 1)) or 1,
                certification=describe_key(key, float(sigma)),
                certified=fixed_radii(c_certs, sm_certs)))
    return out


def evidence_frame(evidence: list[StudentEvidence]) -> pd.DataFrame:
    """The evidence as a flat table (CSV beside REPORT.md)."""
    rows = []
    for ev in evidence:
        row = {"student": ev.student, "images": ev.images, "crt_seeds": ev.seeds[0], "smoothmix_seeds": ev.seeds[1],
               "intervals_over": ev.intervals_over,
               "crt_acr_per_seed": " ".join(f"{a:.6g}" for a in ev.crt_seed_acrs),
               "smoothmix_acr_per_seed": " ".join(f"{a:.6g}" for a in ev.smoothmix_seed_acrs),
               "smoothmix_hours": ev.smoothmix_hours,
               "crt_hours": ev.crt_hours, "teacher_hours": ev.teacher_hours, "crt_over_teacher_acr": ev.teacher_ratio,
               "speedup_pretrained": ev.speedup(SETTINGS[0]), "speedup_proxy": ev.speedup(SETTINGS[1]),
               "speedup_proxy_amortised": ev.amortised_speedup, "teacher_students": ev.teacher_students,
               "certification": ev.certification, "guard_missing": ev.guard_missing,
               "under_trained": bool(ev.under_trained), "training_check": ev.training_check,
               "not_plateaued": "; ".join(ev.not_plateaued)}
        for name, setting in (("speedup_pretrained", SETTINGS[0]), ("speedup_proxy", SETTINGS[1])):
            iv = ev.speed_interval(setting)  # None: a point estimate (fewer than 2 runs of either)
            row.update({f"{name}_low": iv[1] if iv else float("nan"), f"{name}_high": iv[2] if iv else float("nan")})
        for name, t in (("crt_acr", ev.crt_acr), ("smoothmix_acr", ev.smoothmix_acr), ("teacher_acr", ev.teacher_acr),
                        ("crt_minus_smoothmix", ev.difference)):
            t = t or (float("nan"),) * 3
            row.update({name: t[0], f"{name}_low": t[1], f"{name}_high": t[2]})
        rows.append(row)
    return pd.DataFrame(rows)
