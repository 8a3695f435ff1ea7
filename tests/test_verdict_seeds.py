"""Seed-aware intervals (coverage of the mean over seeds in simulation), the under-training guard, and both
end to end from a store with two seeds of each student and a Gaussian-trained student."""
import json

import numpy as np
import pandas as pd
import pytest

from crt_bench.analysis.evidence import student_evidence
from crt_bench.analysis.seeds import seeded_acr_difference, seeded_acr_interval
from crt_bench.analysis.training_check import (
    NoisyAccuracy,
    check_teacher,
    check_training,
    eval_images,
    newcombe_difference,
    wilson,
)
from crt_bench.analysis.uncertainty import acr_interval, paired_acr_difference
from crt_bench.analysis.verdict import NOT_RESOLVED, judge
from crt_bench.report.verdict_section import verdict_markdown
from crt_bench.store.store import ResultsStore
from crt_bench.train.evaluate import EVAL_IMAGES


def cert(values):
    values = np.clip(np.asarray(values, dtype=float), 0, None)
    return pd.DataFrame({"idx": np.arange(len(values)), "correct": (values > 0).astype(int), "radius": values})


def seeds_of(rng, base, shifts):
    """One certification per seed: the shared per-image radii plus the seed's shift plus per-run noise."""
    return [cert(base + s + rng.normal(0, 0.02, len(base))) for s in shifts]


def test_a_known_seed_shift_widens_the_interval_and_it_covers_the_mean_over_seeds():
    rng = np.random.default_rng(0)
    base = rng.uniform(0.2, 0.8, 300)
    certs = seeds_of(rng, base, [-0.06, 0.06])
    seeded = seeded_acr_interval(certs)
    assert seeded.width > 1.5 * acr_interval(certs[0]).width
    assert seeded.estimate == pytest.approx(np.mean([acr_interval(c).estimate for c in certs]))
    assert seeded.contains(base.mean())
    assert seeded_acr_interval(certs[:1]) == acr_interval(certs[0])  # one seed: today's image bootstrap
    one, n = seeded_acr_difference(certs[:1], certs[1:])
    assert one == paired_acr_difference(certs[0], certs[1]) and n == 300


def test_seed_aware_difference_covers_the_population_mean_at_about_its_level():
    # 6 seeds per method, seed effects ~ N(0, 0.03), shared images: the target is the mean over seeds and images
    rng = np.random.default_rng(7)
    trials, covered, covered_images_only = 150, 0, 0
    for t in range(trials):
        base = rng.uniform(0.1, 0.7, 150)
        crt = seeds_of(rng, base + 0.02, rng.normal(0, 0.03, 6))
        sm = seeds_of(rng, base, rng.normal(0, 0.03, 6))
        iv, _ = seeded_acr_difference(crt, sm, reps=400, seed=t)
        covered += iv.contains(0.02)
        covered_images_only += paired_acr_difference(crt[0], sm[0], reps=400, seed=t).contains(0.02)
    # nominal 0.95; with 6 seeds the percentile bootstrap of the seed part runs a little short of it
    assert 0.85 <= covered / trials <= 0.995, covered
    assert covered_images_only / trials < 0.75, covered_images_only  # the image-only interval misses seed variation


def test_wilson_and_newcombe_intervals():
    low, high = wilson(0.5, 100)
    assert low == pytest.approx(0.4038, abs=1e-3) and high == pytest.approx(0.5962, abs=1e-3)
    d, low, high = newcombe_difference(56 / 70, 70, 48 / 80, 80)  # Newcombe (1998), method 10: 0.2 [0.0524, 0.3339]
    assert d == pytest.approx(0.2) and low == pytest.approx(0.0524, abs=5e-4) and high == pytest.approx(0.3339, abs=5e-4)


def test_a_teacher_at_chance_is_under_trained():
    at_chance = check_teacher(NoisyAccuracy(0.100, 2000), "teacher resnet110", 10)  # the first GPU check's teacher
    assert at_chance.under_trained and "< chance 0.1 + 0.05" in at_chance.text
    assert not check_teacher(NoisyAccuracy(0.30, 2000), "t", 10).under_trained
    assert not check_teacher(NoisyAccuracy(0.12, 40), "t", 10).under_trained  # 40 images: no evidence either way
    assert check_teacher(None, "t", 10).text == "" and not check_teacher(NoisyAccuracy(0.1, 2000), "t", 0).under_trained


def test_the_teacher_check_wrongly_flags_a_teacher_at_the_margin_rarely():
    """A teacher whose true noisy accuracy is exactly chance + margin (0.15) is flagged at most ~2.5% of the
    time (the upper end of a 95% Wilson interval lies below its value), whatever the number of images."""
    rng = np.random.default_rng(0)
    for images in (100, 500, 2000):
        hits = rng.binomial(images, 0.15, size=4000)
        rate = np.mean([check_teacher(NoisyAccuracy(h / images, images), "t", 10).under_trained for h in hits])
        assert rate < 0.04, (images, rate)
    # and one truly at chance is caught nearly always on 2,000 images
    hits = rng.binomial(2000, 0.10, size=500)
    assert np.mean([check_teacher(NoisyAccuracy(h / 2000, 2000), "t", 10).under_trained for h in hits]) > 0.99


def test_under_training_guard_fails_only_far_below_the_teacher():
    teacher = NoisyAccuracy(0.80, 2000)
    far = check_training("m", [NoisyAccuracy(0.60, 2000)], teacher, "teacher r")
    assert far.under_trained and "0.600 (2000 images)" in far.text and "< -0.05" in far.text
    near = check_training("m", [NoisyAccuracy(0.76, 2000)], teacher, "teacher r")
    assert not near.under_trained  # 4 points below: within the margin
    # 8 points below on 100 images each: the interval reaches above -0.05, so not shown to be under-trained
    assert not check_training("m", [NoisyAccuracy(0.72, 100)], NoisyAccuracy(0.80, 100), "t").under_trained
    # two seeds pool their images: the same gap on 2 x 100 images is still inconclusive, on 2 x 2000 it is not
    assert check_training("m", [NoisyAccuracy(0.70, 2000)] * 2, teacher, "t").under_trained
    assert not check_training("m", [], teacher, "t").under_trained
    assert eval_images(json.dumps({"test_limit": 256})) == 256 and eval_images(json.dumps({"test_limit": None})) == EVAL_IMAGES


def _run(run_id, method, arch, seed, train_s, teacher=""):
    return {"run_id": run_id, "method": method, "arch": arch, "dataset": "fashion-mnist", "sigma": 0.25, "seed": seed,
            "teacher": teacher, "teacher_arch": "resnet20" if teacher else "", "teacher_run_id": teacher,
            "profile": "cpu-full", "device": "cpu-x", "git_commit": "abc", "epochs": 10, "train_seconds": train_s,
            "teacher_train_seconds": 3600.0 if teacher else float("nan"), "teacher_dedicated": False,
            "total_train_seconds": train_s, "status": "finished", "updated": 1.0,
            "config": json.dumps({"test_limit": None})}


def _certs(run_id, values):
    c = cert(values)
    return c.assign(run_id=run_id, cert_id=f"{run_id}@c", label=0, predict=0, seconds=1.0, n0=100, n=10_000,
                    alpha=0.001, sigma=0.25, device="cpu-x", time="2026-01-01T00:00:00")


def _epochs(run_id, last):
    return [{"run_id": run_id, "epoch": e, "lr": 0.1, "loss": 1.0, "seconds": 1.0, "noisy_test_acc": a}
            for e, a in ((1, last / 2), (2, last))]


@pytest.mark.parametrize("gaussian_acc", [0.50, 0.84])
def test_evidence_from_a_store_with_two_seeds_and_the_guard(tmp_path, gaussian_acc):
    rng = np.random.default_rng(3)
    base = rng.uniform(0.1, 0.7, 120)
    s = ResultsStore(tmp_path / "r")
    s.append("runs", [_run("t", "smoothmix", "resnet20", 0, 3600.0), _run("g0", "gaussian", "m", 0, 100.0),
                      _run("sm0", "smoothmix", "m", 0, 7200.0), _run("sm1", "smoothmix", "m", 1, 7000.0),
                      _run("crt0", "crt", "m", 0, 1000.0, "t"), _run("crt1", "crt", "m", 1, 1200.0, "t")])
    s.append("epochs", _epochs("t", 0.85) + _epochs("g0", gaussian_acc))
    s.append("certify", pd.concat([_certs("t", base + 0.1), _certs("sm0", base), _certs("sm1", base + 0.05),
                                   _certs("crt0", base - 0.3), _certs("crt1", base - 0.25)]))
    (ev,) = student_evidence(s)
    assert ev.seeds == (2, 2) and ev.interval_kind == "seeds and images" and ev.images == 120
    assert ev.crt_hours == pytest.approx(1100 / 3600) and ev.difference[0] < 0
    assert ev.crt_seed_acrs == pytest.approx((acr_interval(_certs("crt0", base - 0.3)).estimate,
                                              acr_interval(_certs("crt1", base - 0.25)).estimate))
    text = verdict_markdown([ev])
    assert "| 2 / 2 | seeds and images |" in text and "crossed" in text
    verdict = judge([ev])["pretrained teacher"]
    if gaussian_acc < 0.8:  # 35 points below the teacher on 2,000 images each: under-trained, CRT's deficit not counted
        assert ev.under_trained and verdict[0] == NOT_RESOLVED and "not resolved (under-trained: Gaussian m" in text
    else:  # a trained cell: CRT far worse than SmoothMix refutes the claim
        assert not ev.under_trained and verdict[0] == "refuted" and "under-training check: Gaussian m" in text
