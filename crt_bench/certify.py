"""Randomized-smoothing certification: CERTIFY and PREDICT of Cohen et al. (2019).

The smoothed classifier is ``g(x) = argmax_c P(f(x + eps) = c)`` with ``eps ~ N(0, sigma^2 I)`` added in
[0, 1] pixel space (before any normalization layer, which belongs to the base classifier ``f``).
If the top class has probability ``pA > 1/2`` then ``g`` is constant on the L2 ball of radius
``sigma * Phi^-1(pA)`` around ``x`` (Cohen et al., Theorem 1 with the bound pB <= 1 - pA).

``pA`` is unknown; CERTIFY estimates it by Monte Carlo:

1. *Selection*: draw ``n0`` noisy copies, guess the top class ``cA`` = most frequent prediction.
2. *Estimation*: draw ``n`` **fresh** noisy copies and count ``nA`` = how often ``f`` says ``cA``.
   Reusing the selection samples would bias ``nA`` upwards (the class was picked because it was
   frequent in those samples), so the two samples are independent.
3. ``pA_lower`` = one-sided ``(1 - alpha)`` Clopper-Pearson lower bound on ``pA`` from ``nA`` of ``n``.
4. If ``pA_lower < 1/2`` abstain, else return ``cA`` with radius ``sigma * Phi^-1(pA_lower)``.

Guarantee: with probability at least ``1 - alpha`` (over the Monte Carlo noise) CERTIFY either
abstains or returns ``g(x)``, and then ``g`` is robust within the returned radius.

PREDICT draws ``n`` noisy copies, takes the two most frequent classes and abstains unless a two-sided
binomial test rejects "both are equally likely" at level ``alpha``; then with probability at least
``1 - alpha`` a non-abstaining answer equals ``g(x)``.

The statistics are module-level pure functions (:func:`lower_confidence_bound`,
:func:`radius_from_counts`, :func:`predict_abstains`) so they can be checked without a model.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pandas as pd
import torch
from scipy.stats import beta, binomtest, norm

from crt_bench.errors import CrtBenchError

ABSTAIN = -1
"""Class index returned when the smoothed classifier declines to answer."""

CERTIFY_COLUMNS = ("idx", "label", "predict", "radius", "correct", "seconds", "n0", "n", "alpha", "sigma")
"""Columns of :func:`certify_dataset` output, in order."""


# --------------------------------------------------------------------------------------------------
# Statistics (no model needed)
# --------------------------------------------------------------------------------------------------


def lower_confidence_bound(n_a: int, n: int, alpha: float) -> float:
    """One-sided ``(1 - alpha)`` Clopper-Pearson lower bound on a binomial proportion.

    With ``n_a`` successes out of ``n`` trials, the exact lower bound is the ``alpha`` quantile of
    ``Beta(n_a, n - n_a + 1)``.  This is the lower end of statsmodels'
    ``proportion_confint(n_a, n, alpha=2 * alpha, method="beta")`` used by Cohen et al.
    Edge cases: ``n_a == n`` gives ``alpha ** (1 / n)``; ``n_a == 0`` gives 0.
    """
    if n < 1 or not 0 <= n_a <= n:
        raise CrtBenchError(f"need 0 <= n_a <= n and n >= 1, got n_a={n_a}, n={n}")
    if not 0.0 < alpha < 1.0:
        raise CrtBenchError(f"alpha must be in (0, 1), got {alpha}")
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
    p_lower = lower_confidence_bound(n_a, n, alpha)
    if p_lower < 0.5:
        return None
    return float(sigma * norm.ppf(p_lower))


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


# --------------------------------------------------------------------------------------------------
# The smoothed classifier
# --------------------------------------------------------------------------------------------------


class Smooth:
    """Gaussian-smoothed version of a base classifier, with CERTIFY and PREDICT.

    ``base_classifier`` maps a batch ``[B, C, H, W]`` of [0, 1] images to logits ``[B, num_classes]``
    (normalization, if any, is inside it).  It is switched to ``eval()`` mode before sampling, so
    batch-norm uses its running statistics.  ``generator`` (optional) makes the noise reproducible;
    it must live on the same device as the images.
    """

    ABSTAIN = ABSTAIN

    def __init__(
        self,
        base_classifier: torch.nn.Module,
        num_classes: int,
        sigma: float,
        generator: torch.Generator | None = None,
    ) -> None:
        if num_classes < 2:
            raise CrtBenchError(f"num_classes must be at least 2, got {num_classes}")
        if not sigma > 0:
            raise CrtBenchError(f"sigma must be positive, got {sigma}")
        self.base_classifier = base_classifier
        self.num_classes = int(num_classes)
        self.sigma = float(sigma)
        self.generator = generator

    def certify(self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int) -> tuple[int, float]:
        """CERTIFY: return ``(cA, radius)``, or ``(ABSTAIN, 0.0)``.

        ``n0`` selection samples pick ``cA``; ``n`` fresh estimation samples give ``nA``; the radius is
        :func:`radius_from_counts` of those.
        """
        _check_settings(alpha, n0=n0, n=n, batch_size=batch_size)
        selection = self._sample_counts(x, n0, batch_size)
        c_a = int(selection.argmax())  # ties -> lowest class index
        estimation = self._sample_counts(x, n, batch_size)
        radius = radius_from_counts(int(estimation[c_a]), n, alpha, self.sigma)
        if radius is None:
            return ABSTAIN, 0.0
        return c_a, radius

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int) -> int:
        """PREDICT: the top class of ``n`` noisy samples, or ``ABSTAIN`` (see :func:`predict_abstains`)."""
        _check_settings(alpha, n=n, batch_size=batch_size)
        counts = self._sample_counts(x, n, batch_size)
        order = np.argsort(-counts, kind="stable")  # ties -> lowest class index first
        top, runner_up = int(order[0]), int(order[1])
        if predict_abstains(int(counts[top]), int(counts[runner_up]), alpha):
            return ABSTAIN
        return top

    def _sample_counts(self, x: torch.Tensor, num: int, batch_size: int) -> np.ndarray:
        """Class histogram of ``argmax f(x + eps)`` over ``num`` noise draws (on device, one transfer)."""
        if x.dim() != 3:
            raise CrtBenchError(f"certify/predict take one image [C, H, W], got shape {tuple(x.shape)}")
        if self.generator is not None and self.generator.device != x.device:
            raise CrtBenchError(
                f"the noise generator is on {self.generator.device} but the image is on {x.device}; "
                "create the generator on the image's device"
            )
        self.base_classifier.eval()
        image = x.to(dtype=torch.float32)
        counts = torch.zeros(self.num_classes, dtype=torch.long, device=x.device)
        with torch.inference_mode():
            remaining = num
            while remaining > 0:
                b = min(batch_size, remaining)
                remaining -= b
                batch = torch.randn(
                    (b, *image.shape), generator=self.generator, device=image.device, dtype=torch.float32
                )
                batch.mul_(self.sigma).add_(image)
                logits = self.base_classifier(batch)
                if logits.dim() != 2 or logits.shape[1] != self.num_classes:
                    raise CrtBenchError(
                        f"base classifier returned shape {tuple(logits.shape)}, "
                        f"expected [batch, {self.num_classes}] logits"
                    )
                counts += torch.bincount(logits.argmax(dim=1), minlength=self.num_classes)
        return counts.cpu().numpy()


def _check_settings(alpha: float, **values: int) -> None:
    """Fail before sampling (which may take minutes) rather than after."""
    if not 0.0 < alpha < 1.0:
        raise CrtBenchError(f"alpha must be in (0, 1), got {alpha}")
    for name, value in values.items():
        if value < 1:
            raise CrtBenchError(f"{name} must be a positive integer, got {value}")


# --------------------------------------------------------------------------------------------------
# Test-set subsets and the dataset driver
# --------------------------------------------------------------------------------------------------

_SUBSET_FORMS = (
    "'all', 'skip:K' (images 0, K, 2K, ...; a bare integer 'K' means the same), "
    "'range:A:B' (images A..B-1) or 'range:A:B:K' (every K-th image of A..B-1)"
)


def parse_subset(spec: str, size: int) -> list[int]:
    """Indices into a dataset split of ``size`` images selected by ``spec``.

    ``"all"``; ``"skip:K"`` or ``"K"`` = every K-th image from 0 (Cohen's ``--skip 20`` -> 0, 20, ...,
    500 CIFAR-10 test images); ``"range:A:B"`` = images A..B-1 (MACER reports ``range:500:1000``);
    ``"range:A:B:K"`` = every K-th image of A..B-1.
    """
    text = str(spec).strip().lower()
    if size < 1:
        raise CrtBenchError(f"cannot select images from an empty split (size {size})")

    def bad(why: str) -> CrtBenchError:
        return CrtBenchError(f"bad subset {spec!r}: {why}; accepted forms: {_SUBSET_FORMS}")

    if text == "all":
        return list(range(size))
    if re.fullmatch(r"\d+", text):
        text = f"skip:{text}"
    match = re.fullmatch(r"skip:(\d+)", text)
    if match:
        step = int(match.group(1))
        if step < 1:
            raise bad("K must be at least 1")
        return list(range(0, size, step))
    match = re.fullmatch(r"range:(\d+):(\d+)(?::(\d+))?", text)
    if match:
        start, stop = int(match.group(1)), int(match.group(2))
        step = int(match.group(3)) if match.group(3) is not None else 1
        if step < 1:
            raise bad("K must be at least 1")
        if not start < stop <= size:
            raise bad(f"need A < B <= {size} (the split has {size} images)")
        return list(range(start, stop, step))
    raise bad("not recognised")


def certify_dataset(
    model: torch.nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sigma: float,
    num_classes: int,
    n0: int,
    n: int,
    alpha: float,
    batch_size: int,
    indices: list[int],
    generator: torch.Generator | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Run CERTIFY on ``x[i]`` for each ``i`` in ``indices``; one row per image.

    Columns (:data:`CERTIFY_COLUMNS`): ``idx`` (index into the split, not the position in the subset),
    ``label``, ``predict`` (``-1`` = abstain), ``radius`` (full precision, 0.0 on abstain), ``correct``
    (1 iff predict == label), ``seconds`` (wall time of the ``certify`` call only), and the settings
    ``n0, n, alpha, sigma``.  Each image is moved to the model's device (that of its first parameter
    or buffer; ``x``'s device for a parameter-free model) before the timer starts.
    """
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y):
        raise CrtBenchError(f"expected images [N, C, H, W] and labels [N], got {tuple(x.shape)} and {tuple(y.shape)}")
    bad = [i for i in indices if not 0 <= i < len(x)]
    if bad:
        raise CrtBenchError(f"image indices out of range 0..{len(x) - 1}: {bad[:5]}")
    smooth = Smooth(model, num_classes, sigma, generator=generator)
    device = _module_device(model, default=x.device)

    records: list[tuple[int, int, int, float, int, float]] = []
    with _progress_bar(progress, len(indices), sigma) as advance:
        for i in indices:
            image = x[i].to(device)
            label = int(y[i])
            start = time.perf_counter()
            prediction, radius = smooth.certify(image, n0, n, alpha, batch_size)
            seconds = time.perf_counter() - start
            records.append((int(i), label, prediction, radius, int(prediction == label), seconds))
            advance()

    columns = list(zip(*records)) if records else [()] * 6
    dtypes = (np.int64, np.int64, np.int64, np.float64, np.int64, np.float64)
    frame = pd.DataFrame(
        {name: np.asarray(col, dtype=dtype) for name, col, dtype in zip(CERTIFY_COLUMNS[:6], columns, dtypes)}
    )
    frame["n0"] = np.int64(n0)
    frame["n"] = np.int64(n)
    frame["alpha"] = np.float64(alpha)
    frame["sigma"] = np.float64(sigma)
    return frame[list(CERTIFY_COLUMNS)]


def _module_device(model: torch.nn.Module, default: torch.device) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return default


@contextmanager
def _progress_bar(enabled: bool, total: int, sigma: float) -> Iterator[Callable[[], None]]:
    """Yield an ``advance()`` callable; shows a transient rich progress bar when ``enabled``."""
    if not enabled:
        yield lambda: None
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(TextColumn(f"certify sigma={sigma:g}"), *columns, transient=True) as bar:
        task = bar.add_task("certify", total=total)
        yield lambda: bar.advance(task)


__all__ = [
    "ABSTAIN",
    "CERTIFY_COLUMNS",
    "Smooth",
    "certify_dataset",
    "lower_confidence_bound",
    "parse_subset",
    "predict_abstains",
    "radius_from_counts",
]
