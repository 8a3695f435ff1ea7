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
    SLOW,
    UNRESOLVED,
    WORSE,
    StudentEvidence,
    judge,
    judge_student,
    robustness,
    speed_interval,
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


def ev(diff, *, sm=0.40, sm_h=10.0, crt_h=2.0, teacher_h=4.0, under=(), guard_missing="", seed_hours=((), ()),
       students=1):
    crt = sm + diff[0]
    return StudentEvidence("convnext_atto", (crt, crt - 0.05, crt + 0.05), (sm, sm - 0.05, sm + 0.05), diff,
                           smoothmix_hours=sm_h, crt_hours=crt_h, teacher_hours=teacher_h,
                           teacher_acr=(0.5, 0.45, 0.55), under_trained=under, images=500,
                           guard_missing=guard_missing, smoothmix_seed_hours=seed_hours[0],
                           crt_seed_hours=seed_hours[1], teacher_students=students)


def test_verdict_holds_refuted_and_not_resolved():
    holds = ev((0.01, -0.02, 0.04))  # margin is 0.04: the whole interval is above -0.04
    assert robustness(holds) == EQUAL_OR_BETTER
    assert judge_student(holds, "pretrained teacher").verdict == HOLDS  # 10 / 2 = 5x
    worse = ev((-0.15, -0.20, -0.10))
    assert robustness(worse) == WORSE and judge_student(worse, "pretrained teacher").verdict == REFUTED
    wide = ev((-0.03, -0.12, 0.06))
    assert robustness(wide) == UNRESOLVED and judge_student(wide, "pretrained teacher").verdict == NOT_RESOLVED
    # an under-trained cell is not resolved, whatever its robustness ...
    under = judge_student(ev((-0.15, -0.20, -0.10), under=("Gaussian far below",)), "pretrained teacher")
    assert under.verdict == NOT_RESOLVED and under.label == "not resolved (under-trained: Gaussian far below)"
    # ... but speed is judged on its own: a CRT that is not much faster refutes the claim, under-trained or not
    slow_under = judge_student(ev((0.01, -0.02, 0.04), sm_h=2.5, under=("Gaussian far below",)), "pretrained teacher")
    assert slow_under.verdict == REFUTED and slow_under.label == REFUTED
    assert any(r.startswith("under-training check") for r in slow_under.reasons)  # the guard's numbers still shown
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
    # an under-trained cell does not refute on robustness: the same worse cell, under-trained, leaves it unresolved
    assert judge([ev((0.01, -0.02, 0.04)), ev((-0.15, -0.2, -0.1), under=("x",))])["pretrained teacher"][0] \
        == NOT_RESOLVED
    text = verdict_markdown([ev((0.01, -0.02, 0.04))])
    assert "claim HOLDS" in text and "+0.010 [-0.020, +0.040]" in text and "5.00x" in text


def test_plateau_status():
    assert plateau_status([0.2, 0.4, 0.5, 0.55, 0.56, 0.56, 0.565, 0.56]) == "plateaued"
    assert plateau_status([0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]) == "rising"
    assert plateau_status([0.2, 0.5]) == "too short"
    # no training hours: no speed-up, and a verdict that cannot hold on speed it does not know
    no_hours = ev((0.01, -0.02, 0.04), sm_h=float("nan"), crt_h=float("nan"), teacher_h=float("nan"))
    assert math.isnan(no_hours.speedup("proxy teacher")) and math.isnan(no_hours.speedup("pretrained teacher"))
    assert judge_student(no_hours, "pretrained teacher").verdict == NOT_RESOLVED
    assert ev((0, 0, 0), crt_h=0.0, teacher_h=0.0).speedup("pretrained teacher") != ev((0, 0, 0)).speedup(
        "pretrained teacher") and math.isnan(ev((0, 0, 0), crt_h=0.0).speedup("pretrained teacher"))


def test_a_cell_without_its_guard_evidence_is_not_resolved():
    unchecked = ev((0.01, -0.02, 0.04), guard_missing="not checked (no Gaussian-trained convnext_atto)")
    v = judge_student(unchecked, "pretrained teacher")
    assert v.verdict == NOT_RESOLVED and v.label == "not resolved (unchecked: not checked (no Gaussian-trained " \
        "convnext_atto))"
    assert judge([unchecked])["pretrained teacher"][0] == NOT_RESOLVED  # holds on its numbers, but fails closed
    assert "UNCHECKED: " in verdict_markdown([unchecked])


def test_speed_has_an_interval_over_the_seeds_runs_and_one_near_the_bar_is_not_resolved():
    # 1.55x on average, runs that vary by +-10%: the interval straddles 1.5x, so speed does not decide
    near = ev((0.01, -0.02, 0.04), sm_h=3.1, crt_h=2.0, seed_hours=((2.8, 3.4), (1.8, 2.2)))
    point, low, high = near.speed_interval("pretrained teacher")
    assert point == pytest.approx(1.55) and low < 1.5 < high
    v = judge_student(near, "pretrained teacher")
    assert v.speed == UNRESOLVED and v.verdict == NOT_RESOLVED and "over the seeds' runs" in v.reasons[1]
    # 1.49x as a point estimate (one run each) refutes; 1.4x from repeat runs that agree does too
    assert judge_student(ev((0.01, -0.02, 0.04), sm_h=2.98, crt_h=2.0), "pretrained teacher").verdict == REFUTED
    tight = ev((0.01, -0.02, 0.04), sm_h=2.8, crt_h=2.0, seed_hours=((2.79, 2.81), (1.99, 2.01)))
    assert judge_student(tight, "pretrained teacher").speed == SLOW
    assert "(point estimate" in judge_student(ev((0.01, -0.02, 0.04)), "pretrained teacher").reasons[1]
    # the interval covers the true ratio at about its level (log-normal run-to-run noise, 2 and 3 runs)
    rng = np.random.default_rng(0)
    for k in (2, 3):
        hits = 0
        for _ in range(2000):
            slow, fast = 10 * rng.lognormal(0, 0.1, k), 2 * rng.lognormal(0, 0.1, k)
            _, lo, hi = speed_interval(slow.tolist(), fast.tolist())
            hits += lo <= 5.0 * np.exp(0.005) <= hi  # the ratio of the means of the two log-normals
        assert 0.93 <= hits / 2000 <= 0.995, (k, hits)


def test_proxy_speed_up_per_student_and_amortised():
    shared = ev((0.01, -0.02, 0.04), sm_h=10.0, crt_h=2.0, teacher_h=8.0, students=4)
    assert shared.speedup("proxy teacher") == pytest.approx(1.0)  # 10 / (2 + 8): the teacher charged per student
    assert shared.amortised_speedup == pytest.approx(2.5)  # 10 / (2 + 8 / 4)
    text = verdict_markdown([shared])
    assert "speed-up, proxy (per student)" in text and "2.50x over 4 student(s)" in text
