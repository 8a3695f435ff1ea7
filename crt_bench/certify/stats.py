"""CERTIFY's statistics: Clopper-Pearson bounds, radii and PREDICT's test, as pure functions.

Kept apart from the sampling engine so they can be checked without a model (see the package
docstring for the theory).  ``scipy.stats`` does the work: ``beta.ppf`` for the exact one-sided
Clopper-Pearson bound, ``norm.ppf`` for the radius, ``binomtest`` for PREDICT.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from scipy.stats import beta, binomtest, norm

from crt_bench.core.checks import check_alpha, check_count
from crt_bench.core.errors import CrtBenchError

ABSTAIN = -1
"""Class index returned when the smoothed classifier declines to answer."""


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower bound on a binomial proportion.

    With ``n_a`` successes out of ``n`` trials, the exact lower bound is the ``alpha`` quantile of
    ``Beta(n_a, n - n_a + 1)``.  This is the lower end of statsmodels'
    ``proportion_confint(n_a, n, alpha=2 * alpha, method="beta")`` used by Cohen et al.
    Edge cases: ``n_a == n`` gives ``alpha ** (1 / n)``; ``n_a == 0`` gives 0.
    """
    if n < 1 or not 0 <= n_a <= n:
        raise CrtBenchError(f"need 0 <= n_a <= n and n >= 1, got n_a={n_a}, n={n}")
    check_alpha(alpha)
    if n_a == 0:
        return 0.0
    return float(beta.ppf(alpha, n_a, n - n_a + 1))


def radius_from_counts(n_a: int, n: int, alpha: float, sigma: float) -> float | None:
    """Certified L2 radius ``sigma * Phi^-1(pA_lower)`` from ``n_a`` top-class votes out of ``n``.

    Returns ``None`` when CERTIFY abstains, i.e. when ``pA_lower < 1/2`` (for N=1e5, alpha=1e-3 that is
    ``n_a < 50490``).  ``pA_lower == 1/2`` exactly is *not* an abstention and gives radius 0.0, as in
    Cohen's ``core.py``.  The largest possible radius is ``sigma * Phi^-1(alpha ** (1 / n))``
    (3.8115 * sigma for N=1e5, alpha=1e-3).
    """
    return radius_from_lower(lower_confidence_bound(n_a, n, alpha), sigma)


def radius_from_lower(p_lower: float, sigma: float) -> float | None:
    """CERTIFY's radius ``sigma * Phi^-1(pA_lower)`` from the bound itself; ``None`` (abstain) below 1/2."""
    if p_lower < 0.5:
        return None
    return float(sigma * norm.ppf(p_lower))


def counts_for_radius(radius: float, n: int, alpha: float, sigma: float) -> int:
    """The smallest ``n_a`` whose :func:`radius_from_counts` reaches ``radius`` (bisection: it is monotone in
    ``n_a``); ``n`` when no count does. Turns a logged radius back into the vote count behind it."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        r = radius_from_counts(mid, n, alpha, sigma)
        if r is not None and r >= radius - 1e-12:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass(frozen=True)
class Certificate:
    """One image's CERTIFY outcome and the counts it came from (the counts columns of a certify row).

    ``c_a``: the class the ``n0`` selection samples chose (ties: lowest index); ``selection_count``: its votes
    among them; ``n_a``: its votes among the ``n_counted`` estimation samples counted, of the ``n`` asked for
    (``n_counted < n`` where exact early abstention stopped the image: its counts are then partial);
    ``p_a_lower``: :func:`lower_confidence_bound` of ``n_a`` of ``n`` at ``alpha``; ``predict``/``radius``: the row.
    """

    c_a: int
    selection_count: int
    n_a: int
    n_counted: int
    n: int
    p_a_lower: float
    predict: int
    radius: float

    @property
    def partial(self) -> bool:
        return self.n_counted < self.n


def certificate(c_a: int, selection_count: int, n_a: int, n_counted: int, n: int, alpha: float,
                sigma: float) -> Certificate:
    """CERTIFY's step 3-4 from the counts: ``(cA, radius)`` or ``(ABSTAIN, 0.0)``, with ``pA_lower``.

    Partial counts (``n_counted < n``) are scored against ``n``, as CERTIFY does: early abstention stops an
    image only when even the samples not drawn could not make it certify at ``alpha``.
    """
    if not 0 <= n_a <= n_counted <= n:
        raise CrtBenchError(f"need 0 <= n_a <= n_counted <= n, got n_a={n_a}, n_counted={n_counted}, n={n}")
    p_lower = lower_confidence_bound(n_a, n, alpha)
    radius = radius_from_lower(p_lower, sigma)
    predict, r = (ABSTAIN, 0.0) if radius is None else (int(c_a), radius)
    return Certificate(int(c_a), int(selection_count), int(n_a), int(n_counted), int(n), p_lower, predict, r)


def upper_confidence_bound(k: int, n: int, alpha: float) -> float:
    """One-sided ``(1 - alpha)`` Clopper-Pearson upper bound on a binomial proportion from ``k`` of ``n``.

    The mirror of :func:`lower_confidence_bound`: ``1 - lower(n - k, n)``, the ``1 - alpha`` quantile of
    ``Beta(k + 1, n - k)``; ``k == n`` gives 1, ``k == 0`` gives ``1 - alpha ** (1 / n)``.
    """
    if n < 1 or not 0 <= k <= n:
        raise CrtBenchError(f"need 0 <= k <= n and n >= 1, got k={k}, n={n}")
    return 1.0 - lower_confidence_bound(n - k, n, alpha)


def p_lower_from_radius(radius: float, sigma: float) -> float:
    """The ``pA_lower`` behind a non-abstained CERTIFY radius: ``Phi(radius / sigma)``
    (the inverse of ``radius = sigma * Phi^-1(pA_lower)``)."""
    return float(norm.cdf(radius / sigma))


def transfer_radius(p_a_lower: float, zeta: float, sigma: float) -> float | None:
    """Incremental smoothing's radius ``sigma * Phi^-1(pA_lower - zeta)`` (Ugare et al. 2024, Theorem 1).

    ``pA_lower`` bounds the teacher's top-class probability, ``zeta`` the probability that teacher and
    student disagree under the noise; the student then says ``cA`` with probability at least their
    difference.  ``None`` (abstain) unless that difference is above 1/2.
    """
    p = p_a_lower - zeta
    if not p > 0.5:
        return None
    return float(sigma * norm.ppf(p))


@lru_cache(maxsize=64)
def min_certifying_count(n: int, alpha: float) -> int:
    """The smallest ``n_a`` with which CERTIFY does not abstain (``pA_lower >= 1/2``); ``n + 1`` when none
    does.  Independent of sigma (the radius is ``sigma * Phi^-1(pA_lower)``, 0 at ``pA_lower = 1/2``)."""
    if radius_from_counts(n, n, alpha, 1.0) is None:
        return n + 1
    return counts_for_radius(0.0, n, alpha, 1.0)


def predict_abstains(top_count: int, runner_up_count: int, alpha: float) -> bool:
    """PREDICT's decision: abstain unless the top class significantly beats the runner-up.

    Under H0 "top and runner-up class are equally likely", ``top_count`` given
    ``top_count + runner_up_count`` is Binomial(., 1/2).  PREDICT abstains when the two-sided exact
    binomial test does not reject H0, i.e. when its p-value is ``> alpha``
    (``scipy.stats.binomtest``; replaces ``binom_test``, removed in SciPy 1.12).
    """
    total = top_count + runner_up_count
    if total == 0:
        return True
    return bool(binomtest(top_count, total, 0.5).pvalue > alpha)

def check_settings(alpha: float, **values: int) -> None:
    """Fail before sampling (which may take minutes) rather than after."""
    check_alpha(alpha)
    for name, value in values.items():
        check_count(name, value)
