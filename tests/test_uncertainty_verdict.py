"""Bootstrap intervals over images (coverage on a synthetic population) and the verdict on hand-built rows."""
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crt_bench.analysis.evidence import plateau_status
from crt_bench.analysis.metrics import acr, certified_accuracy
from crt_bench.analysis.uncertainty import acr_interval, certified_accuracy_intervals, paired_acr_difference
from crt_bench.analysis.verdict import (
    EQUAL_OR_BETTER,
    HOLDS,
    NOT_RESOLVED,
    REFUTED,
    UNRESOLVED,
    WORSE,
    StudentEvidence,
    judge,
    judge_student,
    robustness,
)
from crt_bench.report.verdict_section import verdict_markdown


def population_sample(rng, n):
    """A certification of n images: 30% wrong or abstained (radius 0), else radius ~ U(0, 0.8)."""
    correct = (rng.random(n) > 0.3).astype(int)
    radius = np.where(correct == 1, rng.uniform(0, 0.8, n), 0.0)
    return pd.DataFrame({"idx": np.arange(n), "correct": correct, "radius": radius})


TRUE_ACR = 0.7 * 0.4  # E[radius * correct]


def test_acr_interval_covers_the_population_value_at_its_level():
    rng = np.random.default_rng(123)
    trials, covered = 200, 0
    for t in range(trials):
        iv = acr_interval(population_sample(rng, 300), reps=1000, seed=t)
        covered += iv.low <= TRUE_ACR <= iv.high
    # coverage ~ Binomial(200, 0.95) if the interval is right: accept its central 99.9%
    lo, hi = stats.binom.ppf([0.0005, 0.9995], trials, 0.95)
    assert lo <= covered <= hi, covered


def test_intervals_agree_with_the_metrics_and_shrink_with_images():
    rng = np.random.default_rng(0)
    rows = population_sample(rng, 400)
    iv = acr_interval(rows)
    assert iv.estimate == pytest.approx(acr(rows)) and iv.low < iv.estimate < iv.high
    acc = certified_accuracy_intervals(rows, [0.0, 0.25, 0.5])
    assert acc["estimate"].tolist() == pytest.approx(certified_accuracy(rows, [0.0, 0.25, 0.5]).tolist())
    assert ((acc["low"] <= acc["estimate"]) & (acc["estimate"] <= acc["high"])).all()
    assert acr_interval(population_sample(rng, 1600)).width < iv.width * 0.75  # ~1/2 in expectation
    assert acr_interval(rows, seed=5) == acr_interval(rows, seed=5)  # seeded


def test_paired_difference_is_narrower_than_unpaired_and_matches_by_image():
    rng = np.random.default_rng(1)
    a = population_sample(rng, 400)
    b = a.assign(radius=np.clip(a["radius"] - 0.05, 0, None))  # the same images, slightly smaller radii
    diff = paired_acr_difference(a, b)
    assert diff.estimate == pytest.approx(acr(a) - acr(b)) and diff.low > 0
    assert diff.width < acr_interval(a).width / 3
    shuffled = b.sample(frac=1.0, random_state=0)
    assert paired_acr_difference(a, shuffled).estimate == pytest.approx(diff.estimate)


def ev(diff, *, sm=0.40, sm_h=10.0, crt_h=2.0, teacher_h=4.0, under=()):
    crt = sm + diff[0]
    return StudentEvidence("convnext_atto", (crt, crt - 0.05, crt + 0.05), (sm, sm - 0.05, sm + 0.05), diff,
                           smoothmix_hours=sm_h, crt_hours=crt_h, teacher_hours=teacher_h,
                           teacher_acr=(0.5, 0.45, 0.55), under_trained=under, images=500)


def test_verdict_holds_refuted_and_not_resolved():
    holds = ev((0.01, -0.02, 0.04))  # margin is 0.04: the whole interval is above -0.04
    assert robustness(holds) == EQUAL_OR_BETTER
    assert judge_student(holds, "pretrained teacher").verdict == HOLDS  # 10 / 2 = 5x
    worse = ev((-0.15, -0.20, -0.10))
    assert robustness(worse) == WORSE and judge_student(worse, "pretrained teacher").verdict == REFUTED
    wide = ev((-0.03, -0.12, 0.06))
    assert robustness(wide) == UNRESOLVED and judge_student(wide, "pretrained teacher").verdict == NOT_RESOLVED
    # an under-trained cell is not resolved, whatever its robustness or speed ...
    under = judge_student(ev((-0.15, -0.20, -0.10), sm_h=2.5, under=("Gaussian far below",)), "pretrained teacher")
    assert under.verdict == NOT_RESOLVED and under.label == "not resolved (under-trained: Gaussian far below)"
    # ... while a trained cell whose CRT is not much faster refutes the claim
    slow = ev((0.01, -0.02, 0.04), sm_h=2.5, crt_h=2.0)
    assert judge_student(slow, "pretrained teacher").verdict == REFUTED
    # the proxy setting counts the teacher: 10 / (2 + 4) = 1.67x still holds, 10 / (2 + 6) = 1.25x does not
    assert judge_student(holds, "proxy teacher").verdict == HOLDS
    assert judge_student(ev((0.01, -0.02, 0.04), teacher_h=6.0), "proxy teacher").verdict == REFUTED
    assert holds.teacher_ratio == pytest.approx(0.41 / 0.5)


def test_overall_verdict_over_students():
    out = judge([ev((0.01, -0.02, 0.04)), ev((0.0, -0.03, 0.03))])
    assert out["pretrained teacher"][0] == HOLDS
    assert judge([ev((0.01, -0.02, 0.04)), ev((-0.03, -0.12, 0.06))])["pretrained teacher"][0] == NOT_RESOLVED
    assert judge([ev((0.01, -0.02, 0.04)), ev((-0.15, -0.2, -0.1))])["pretrained teacher"][0] == REFUTED
    # only a resolved cell can refute: the same worse cell, under-trained, leaves the claim unresolved
    assert judge([ev((0.01, -0.02, 0.04)), ev((-0.15, -0.2, -0.1), under=("x",))])["pretrained teacher"][0] \
        == NOT_RESOLVED
    text = verdict_markdown([ev((0.01, -0.02, 0.04))])
    assert "claim HOLDS" in text and "+0.010 [-0.020, +0.040]" in text and "5.00x" in text


def test_plateau_status():
    assert plateau_status([0.2, 0.4, 0.5, 0.55, 0.56, 0.56, 0.565, 0.56]) == "plateaued"
    assert plateau_status([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]) == "rising"
    assert plateau_status([0.2, 0.5]) == "too short"
    assert math.isnan(ev((0, 0, 0)).speedup("proxy teacher") * float("nan"))
