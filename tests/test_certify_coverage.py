"""Statistical tests of CERTIFY on its production path that can fail: exact early abstention at the boundary,
CERTIFY's coverage and the joint coverage of transferred certificates, each with a control that must fail.

The base classifier is a threshold on one pixel: ``f(x) = 1`` iff ``x[0, 0, 0] > 1/2``, so at an image whose
first pixel is ``v`` its smoothed top-class probability is exactly ``pA = Phi((v - 1/2) / sigma)``.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import norm

from crt_bench.certify import early_stop
from crt_bench.certify.batching import intra_op_threads
from crt_bench.certify.driver import certify_dataset
from crt_bench.certify.smooth import Smooth
from crt_bench.certify.stats import transfer_radius
from crt_bench.certify.transfer import iter_transfer

SIGMA = 0.25


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one intra-op thread (two threads on two shared cores cost 20x at a high load)."""
    with intra_op_threads(1):
        yield


class Threshold(torch.nn.Module):
    """Class 1 iff the first pixel exceeds ``t`` (else 0)."""

    def __init__(self, t: float = 0.5) -> None:
        super().__init__()
        self.t = t

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 0, 0] - self.t
        return torch.stack([-v, v], dim=1)


def images_at(p_a: np.ndarray) -> torch.Tensor:
    """One 1x2x2 image per entry of ``p_a`` whose smoothed class-1 probability under :class:`Threshold` is it."""
    v = 0.5 + SIGMA * norm.ppf(np.asarray(p_a, dtype=np.float64))
    return torch.tensor(v, dtype=torch.float32)[:, None, None, None].expand(len(v), 1, 2, 2).contiguous()


def true_p_a(images: torch.Tensor, t: float = 0.5) -> np.ndarray:
    return norm.cdf((images[:, 0, 0, 0].double().numpy() - t) / SIGMA)


# -- exact early abstention near the boundary --------------------------------------------------------------


def _rows(images: torch.Tensor, n: int, alpha: float, *, early: bool, workers: int, batch: int, seed: int):
    smooth = Smooth(Threshold(), 2, SIGMA, noise_seed=seed, early_stop=early, cpu_workers=workers)
    certificates = smooth.certify_counts(images, 10, n, alpha, batch_size=batch)
    return [(c.predict, c.radius, c.c_a, c.selection_count) for c in certificates], certificates


CASES = [(1000, 0.01, 1, 97), (1000, 0.001, 2, 32), (4000, 0.001, 1, 256),
         pytest.param(10_000, 0.001, 2, 128, marks=pytest.mark.slow), (10_000, 0.001, 1, 500)]
"""(n, alpha, CPU workers, batch): in pA 0.50-0.56 an image can be stopped only in its last ~10% of samples, so
the parallel path (up to 2 x workers batches in flight) needs batches small enough to be cut at all."""


@pytest.mark.parametrize("n, alpha, workers, batch", CASES)
def test_early_abstention_equals_full_sampling_near_the_boundary(n: int, alpha: float, workers: int,
                                                                 batch: int) -> None:
    """pA in 0.50-0.56 (where certifying and abstaining are both likely), 40 images, 3 noise seeds each, on the
    serial (workers=1) and the parallel (workers=2) CPU path: the early-stopped rows equal the full-sampling ones."""
    p_a = np.linspace(0.50, 0.56, 40)
    images = images_at(p_a)
    stopped = certified = 0
    for seed in (0, 1, 2):
        full, _ = _rows(images, n, alpha, early=False, workers=workers, batch=batch, seed=seed)
        early, certificates = _rows(images, n, alpha, early=True, workers=workers, batch=batch, seed=seed)
        assert early == full, seed
        stopped += sum(c.partial for c in certificates)
        certified += sum(row[0] >= 0 for row in full)
    assert stopped >= 5 and certified >= 5  # both outcomes happen: the boundary is where the test looks


def test_a_stopping_rule_one_vote_too_eager_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """Control: stopping when a few votes are still missing (an inexact rule) changes rows the test above sees."""
    real = early_stop.min_certifying_count
    monkeypatch.setattr(early_stop, "min_certifying_count", lambda n, alpha: real(n, alpha) + 15)
    images = images_at(np.linspace(0.50, 0.56, 40))
    differ = 0
    for seed in (0, 1, 2):
        full, _ = _rows(images, 1000, 0.01, early=False, workers=1, batch=97, seed=seed)
        early, _ = _rows(images, 1000, 0.01, early=True, workers=1, batch=97, seed=seed)
        differ += sum(a != b for a, b in zip(full, early))
    assert differ >= 1


# -- CERTIFY's coverage on the production path ------------------------------------------------------------


def _wrong(rows: pd.DataFrame, p_a: np.ndarray, p_lower: np.ndarray) -> np.ndarray:
    """A certificate is wrong when it names a class other than the smoothed classifier's (class 1, pA > 1/2) or
    claims a pA_lower above the true pA (its radius then exceeds the true one)."""
    said = rows["predict"].to_numpy() != -1
    return said & ((rows["predict"].to_numpy() != 1) | (p_lower > p_a))


def test_certify_coverage_on_the_production_path() -> None:
    """certify_dataset with keyed noise and early abstention (the production path), alpha = 0.05, 1,200 images
    with known pA from 0.5 to 0.95: wrong certificates at most alpha (plus 3 standard errors); the control that
    drops the confidence bound (pA_lower := nA / n) is wrong on far more."""
    alpha, k, n = 0.05, 1200, 500
    rng = np.random.default_rng(0)
    images = images_at(rng.uniform(0.5, 0.95, k))
    p_a = true_p_a(images)
    rows = certify_dataset(Threshold(), images, torch.ones(k, dtype=torch.long), sigma=SIGMA, num_classes=2, n0=10,
                           n=n, alpha=alpha, batch_size=1000, indices=list(range(k)), seed=3, progress=False)
    assert (rows["n_counted"] < n).sum() >= 10  # early abstention was at work
    assert (rows["predict"] == 1).mean() > 0.7
    wrong = _wrong(rows, p_a, rows["p_a_lower"].to_numpy())
    bound = alpha + 3 * np.sqrt(alpha * (1 - alpha) / k)
    assert wrong.mean() <= bound
    plug_in = np.where(rows["predict"] == 1, rows["n_a"] / n, 0.0)
    assert _wrong(rows, p_a, plug_in).mean() > 3 * bound


# -- joint coverage of transferred certificates -----------------------------------------------------------


def test_transferred_certificates_cover_jointly_and_a_plug_in_zeta_does_not() -> None:
    """Teacher ``x0 > 1/2``, student ``x0 > 1/2 + delta``: they disagree exactly where the teacher says class 1 and
    the student does not, so the student's true pA is the teacher's minus the disagreement rate, the tightest case
    of Ugare et al.'s bound.  With alpha = alpha_zeta = 0.05 the transferred certificate overstates the student's
    pA at most alpha + alpha_zeta of the time; with the plug-in zeta = d / n_p (no confidence bound) far more."""
    alpha, k, n, n_p, delta = 0.05, 600, 4000, 100, 0.1  # the teacher's bound tight, zeta's noise large
    images = images_at(np.full(k, 0.85))
    student_p = true_p_a(images, 0.5 + delta)
    labels = torch.ones(k, dtype=torch.long)
    kw = dict(sigma=SIGMA, batch_size=1000, indices=list(range(k)), seed=4, progress=False)
    teacher_rows = certify_dataset(Threshold(), images, labels, num_classes=2, n0=10, n=n, alpha=alpha, **kw)
    moved = pd.concat([frame for frame, _ in iter_transfer(Threshold(), Threshold(0.5 + delta), images, labels,
                                                           teacher_rows, n_p=n_p, alpha_zeta=alpha, **kw)],
                      ignore_index=True)
    assert (moved["predict"] == 1).mean() > 0.9 and moved["disagreements"].mean() > 10
    over = (moved["predict"] == 1) & (moved["radius"] > SIGMA * norm.ppf(student_p) + 1e-12)
    bound = 2 * alpha + 3 * np.sqrt(2 * alpha * (1 - 2 * alpha) / k)
    assert over.mean() <= bound, over.mean()
    plug = [transfer_radius(p, d / n_p, SIGMA) for p, d in zip(teacher_rows["p_a_lower"], moved["disagreements"])]
    plug_over = np.array([r is not None and r > SIGMA * norm.ppf(s) + 1e-12 for r, s in zip(plug, student_p)])
    assert plug_over.mean() > 2 * bound, plug_over.mean()
