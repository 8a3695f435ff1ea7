"""The under-training guard of the verdict: can this budget train the student architecture at all?

A step-decay schedule makes every noisy-accuracy curve look flat after its last decay, so a plateau is not
evidence of a trained model. This rule can fail: the student architecture trained with plain Gaussian noise
(same data, sigma, profile and epoch budget as the CRT and SmoothMix students) is compared with the teacher.
Each model's noisy test accuracy is its last epoch's ``noisy_test_acc`` (``epochs`` table), measured on the
first ``min(test images, EVAL_IMAGES)`` test images under one noise draw (:func:`crt_bench.train.evaluate.noisy_correct`):
every seed and the teacher are evaluated on the *same* images, so several seeds are that many distinct images,
counted once, not a sum.

The cell is **under-trained** when the upper end of the 95% interval of (Gaussian student - teacher) noisy
accuracy lies below ``-UNDER_TRAINED_MARGIN``: the student cannot reach within that margin of the teacher even
with the easiest objective, so a CRT-SmoothMix comparison at this budget says more about the budget than the
methods. Where the store keeps each evaluation's per-image correctness (epochs schema 3) the interval is the seed
x image interval of :func:`crt_bench.analysis.seeds.crossed_interval`: teacher and students paired on the same
images, the Gaussian seeds' spread as its seed term, the teacher a fixed reference (the one the CRT students
learn from). Older stores (accuracy only): Newcombe's hybrid score interval (method 10) from the two Wilson
intervals, the seeds' mean accuracy a proportion of the distinct images (unpaired, no seed term: labelled).

The guard fails closed: without a Gaussian student or a teacher curve the cell is not checked, and a cell
that is not checked is not resolved (:mod:`crt_bench.analysis.verdict`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crt_bench.analysis.seeds import crossed_interval
from crt_bench.core.bits import unpack_bits
from crt_bench.train.evaluate import EVAL_IMAGES

UNDER_TRAINED_MARGIN = 0.05  # the Gaussian student's noisy accuracy this far below the teacher's: under-trained
Z95 = 1.959963984540054


def wilson(p: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion ``p`` of ``n`` trials."""
    if n <= 0:
        return (0.0, 1.0)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (max(0.0, centre - half), min(1.0, centre + half))


def newcombe_difference(p1: float, n1: int, p2: float, n2: int) -> tuple[float, float, float]:
    """``p1 - p2`` with Newcombe's 95% hybrid score interval (independent samples)."""
    l1, u1 = wilson(p1, n1)
    l2, u2 = wilson(p2, n2)
    d = p1 - p2
    return (d, d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2))


@dataclass(frozen=True, eq=False)
class NoisyAccuracy:
    """A model's last-epoch noisy test accuracy, the number of (the first) test images it was measured on, and
    each image's correctness where the store kept it (``None`` in older stores)."""

    accuracy: float
    images: int
    correct: np.ndarray | None = None


def eval_images(config: object) -> int:
    """Test images of one per-epoch evaluation: the run's ``test_limit`` capped by ``EVAL_IMAGES``."""
    try:
        limit = json.loads(config).get("test_limit") if isinstance(config, str) and config else None
    except ValueError:
        limit = None
    return min(int(limit), EVAL_IMAGES) if limit else EVAL_IMAGES


def last_accuracies(runs: pd.DataFrame, epochs: pd.DataFrame) -> dict[str, NoisyAccuracy]:
    """run_id -> its last epoch's noisy test accuracy (runs without a measured epoch are left out)."""
    if epochs.empty or runs.empty:
        return {}
    config = dict(zip(runs["run_id"], runs["config"] if "config" in runs else [None] * len(runs)))
    out = {}
    for run, part in epochs.dropna(subset=["noisy_test_acc"]).sort_values(["run_id", "epoch"]).groupby("run_id"):
        last = part.iloc[-1]
        packed, count = last.get("noisy_test_correct"), last.get("noisy_test_images")
        if isinstance(packed, str) and packed and count == count and count is not None:
            correct = unpack_bits(packed, int(count))
            out[run] = NoisyAccuracy(float(last["noisy_test_acc"]), int(count), correct)
        else:  # an epoch written before per-image correctness was kept
            out[run] = NoisyAccuracy(float(last["noisy_test_acc"]), eval_images(config.get(run)))
    return out


def _per_image(accs: list[NoisyAccuracy], images: int) -> np.ndarray | None:
    """``[seeds, images]`` correctness when every evaluation kept it on the same number of images, else None."""
    if any(a.correct is None or len(a.correct) != images for a in accs):
        return None
    return np.stack([a.correct for a in accs]).astype(np.float64)


@dataclass(frozen=True)
class TrainingCheck:
    """The guard's numbers for one cell; ``under_trained`` is the decision, ``text`` says it with the numbers."""

    under_trained: bool
    text: str
    checked: bool = True  # False: evidence missing, the cell cannot be resolved (the text says what is missing)


def check_training(arch: str, gaussian: list[NoisyAccuracy], teacher: NoisyAccuracy | None, teacher_name: str,
                   margin: float = UNDER_TRAINED_MARGIN) -> TrainingCheck:
    """The guard for one cell (module doc); ``checked=False`` when the Gaussian student or the teacher is missing."""
    if not gaussian or teacher is None:
        missing = "no Gaussian-trained " + arch if not gaussian else "no noisy-accuracy curve of the " + teacher_name
        return TrainingCheck(False, f"not checked ({missing})", checked=False)
    images = min(a.images for a in [*gaussian, teacher])  # the first test images: shared by every evaluation
    g = float(np.mean([a.accuracy for a in gaussian]))
    students, reference = _per_image(gaussian, images), _per_image([teacher], images)
    seeds = f", {len(gaussian)} seeds" if len(gaussian) > 1 else ""
    if students is not None and reference is not None:
        iv = crossed_interval([students, reference], [1.0, -1.0], borrow=False)
        d, low, high, how = iv.estimate, iv.low, iv.high, "paired per image" + (", seeds resampled" if seeds else "")
        g = float(students.mean())
    else:
        d, low, high = newcombe_difference(g, images, teacher.accuracy, images)
        how = "Newcombe, unpaired: per-image correctness not stored" + (", no seed term" if seeds else "")
    under = high < -margin
    return TrainingCheck(under, f"Gaussian {arch} noisy acc {g:.3f} - {teacher_name} "
                                f"{teacher.accuracy:.3f} = {d:+.3f} [{low:+.3f}, {high:+.3f}] "
                                f"{'<' if under else '>='} -{margin:g} ({images} test images{seeds}; {how})")


def check_teacher(teacher: NoisyAccuracy | None, teacher_name: str, classes: int,
                  margin: float = UNDER_TRAINED_MARGIN) -> TrainingCheck:
    """The other side: a teacher at chance has nothing to transfer, whatever its students do.

    Under-trained when the upper end of the Wilson interval of the teacher's noisy accuracy lies below
    ``1 / classes + margin`` (the first GPU check's one-epoch ResNet-110 teacher: 0.100 on 2,000 images,
    which the student-side rule let through as "refuted" because its Gaussian student did better).
    """
    if teacher is None or classes < 2:
        return TrainingCheck(False, "")
    low, high = wilson(teacher.accuracy, teacher.images)
    chance = 1.0 / classes
    under = high < chance + margin
    return TrainingCheck(under, f"{teacher_name} noisy acc {teacher.accuracy:.3f} [{low:.3f}, {high:.3f}] "
                                f"({teacher.images} images) {'<' if under else '>='} chance {chance:.3g} + {margin:g}")


__all__ = ["NoisyAccuracy", "TrainingCheck", "UNDER_TRAINED_MARGIN", "check_teacher", "check_training", "eval_images",
           "last_accuracies", "newcombe_difference", "wilson"]
