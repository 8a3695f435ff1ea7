"""Certificate transfer (incremental randomized smoothing, Ugare et al., ICLR 2024, arXiv 2305.19521).

A finished CERTIFY of a teacher ``f`` gives, per image, ``cA`` and ``pA_lower`` (a ``1 - alpha`` lower bound
on ``P(f(x + eps) = cA)``; recovered from the stored radius as ``Phi(radius / sigma)``).  For a student
``f'`` on the same image, ``n_p`` fresh noisy copies (keyed noise
:attr:`Draw.TRANSFER <crt_bench.certify.smooth.Draw.TRANSFER>`, so the draws are reproducible and independent
of CERTIFY's) are fed to **both** models (:class:`Disagree`); ``d`` = how often their predictions differ,
and ``zeta`` = the one-sided ``1 - alpha_zeta`` Clopper-Pearson upper bound on ``P(f(x + eps) != f'(x + eps))``.  Since
``P(f'(x + eps) = cA) >= P(f(x + eps) = cA) - P(f != f')``, the student is certified for ``cA`` at radius
``sigma * Phi^-1(pA_lower - zeta)`` unless ``pA_lower - zeta <= 1/2`` (abstain); the guarantee holds with
probability at least ``1 - (alpha + alpha_zeta)``.  The two models need not share an architecture.

:func:`iter_transfer` is the driver (as :func:`~crt_bench.certify.driver.iter_certify`, one frame per group
of images, with its :class:`~crt_bench.certify.driver.EngineSettings`); storing and resuming it is
:mod:`crt_bench.certify.transfer_run`'s job.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager

import numpy as np
import pandas as pd
import torch
from torch import nn

from crt_bench.certify.batching import forward_batch_sizes
from crt_bench.certify.driver import GROUP_BATCHES, MAX_GROUP, EngineSettings, module_device, progress_bar
from crt_bench.certify.precision import AUTOCAST_DTYPES, autocast, uses_tf32
from crt_bench.certify.smooth import Draw, Smooth
from crt_bench.certify.stats import (ABSTAIN, check_settings, p_lower_from_radius, transfer_radius,
                                    upper_confidence_bound)
from crt_bench.core.errors import CrtBenchError
from crt_bench.models.bn_fold import fold_batchnorm

TRANSFER_COLUMNS = ("idx", "label", "predict", "radius", "correct", "seconds", "disagreements")
"""Columns of :func:`iter_transfer` frames, in order (``disagreements``: -1 where the teacher abstained)."""


class Disagree(nn.Module):
    """The predicate ``f(x) != f'(x)``: one bool per input, whether teacher and student predict differently
    (:meth:`Smooth.count_true <crt_bench.certify.smooth.Smooth.count_true>` counts it on noisy copies).

    Each model runs at its own forward precision (``fp32``/``tf32``: autocast off, ``bf16``/``fp16``: its
    autocast), whatever the engine's autocast around the pair: the teacher is the function its
    certification sampled, the student the one being certified (e.g. a bf16 copy of an fp32 teacher).
    """

    def __init__(self, teacher: nn.Module, student: nn.Module, teacher_precision: str = "fp32",
                 student_precision: str = "fp32") -> None:
        super().__init__()
        self.teacher, self.student = teacher, student
        self.precisions = (teacher_precision, student_precision)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with _own_precision(self.precisions[0], x.device):
            teacher_pred = self.teacher(x).argmax(dim=1)
        with _own_precision(self.precisions[1], x.device):
            student_pred = self.student(x).argmax(dim=1)
        return teacher_pred != student_pred


def _own_precision(precision: str, device: torch.device) -> AbstractContextManager:
    return autocast(precision, device) if precision in AUTOCAST_DTYPES else torch.autocast(device.type, enabled=False)


def transfer_one(predict: int, radius: float, sigma: float, disagreements: int, n_p: int,
                 alpha_zeta: float) -> tuple[int, float]:
    """The student's ``(class, radius)`` from the teacher's row (``predict``, ``radius``) and ``d`` of ``n_p``."""
    if predict == ABSTAIN:
        return ABSTAIN, 0.0
    zeta = upper_confidence_bound(disagreements, n_p, alpha_zeta)
    r = transfer_radius(p_lower_from_radius(radius, sigma), zeta, sigma)
    return (ABSTAIN, 0.0) if r is None else (int(predict), r)


def iter_transfer(
    teacher: nn.Module,
    student: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    teacher_rows: pd.DataFrame,
    *,
    sigma: float,
    n_p: int,
    alpha_zeta: float,
    batch_size: int | None,
    indices: list[int],
    seed: int,
    progress: bool = True,
    precision: str = "fp32",
    teacher_precision: str = "fp32",
    compile: bool = False,
) -> Iterator[tuple[pd.DataFrame, EngineSettings]]:
    """Transfer the teacher's certificates (``teacher_rows``: ``idx``, ``predict``, ``radius``) to ``student``.

    Columns :data:`TRANSFER_COLUMNS`; ``seconds`` is the group's wall time of the disagreement sampling
    divided by its images (teacher-abstained images draw nothing and cost 0).  Noise is keyed by
    (``seed``, image index, :attr:`Draw.TRANSFER`): a row does not depend on grouping or resumption.  Each
    frame comes with its engine settings, as :func:`~crt_bench.certify.driver.iter_certify`'s do.  ``precision``
    is the student's forward, ``teacher_precision`` the teacher certification's (:class:`Disagree`); TF32
    must be on for both or neither.  Batch norms are folded in each model on its own
    (:func:`~crt_bench.models.bn_fold.fold_batchnorm`), never across the pair's precision contexts.
    """
    if uses_tf32(precision) != uses_tf32(teacher_precision):
        raise CrtBenchError(f"the teacher's certification ran at precision {teacher_precision}, the student's would "
                            f"run at {precision}: TF32 must be on for both or for neither")
    check_settings(alpha_zeta, n_p=n_p)
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y):
        raise CrtBenchError(f"expected images [N, C, H, W] and labels [N], got {tuple(x.shape)} and {tuple(y.shape)}")
    by_idx = teacher_rows.set_index("idx")
    missing = [i for i in indices if i not in by_idx.index]
    if missing:
        raise CrtBenchError(f"the teacher's certification has no row for images {missing[:5]}")
    members, folded = [], 0
    for model in (teacher.eval(), student.eval()):
        copy, count = fold_batchnorm(model, tuple(x.shape[1:]))
        members.append(model if copy is None else copy)
        folded += count
    pair = Disagree(*members, teacher_precision, precision).eval()
    smooth = Smooth(pair, 2, sigma, precision=precision, compile=compile, noise_seed=seed, fold_batchnorm=False)
    device = module_device(pair, default=x.device)
    batch = batch_size if batch_size is not None else smooth.auto_batch_size(x[indices[0]].to(device)) if indices else 1
    group = min(MAX_GROUP, max(1, math.ceil(GROUP_BATCHES * batch / n_p)))
    groups = [[int(i) for i in indices[start: start + group]] for start in range(0, len(indices), group)]
    sampled = [[i for i in chosen if int(by_idx.at[i, "predict"]) != ABSTAIN] for chosen in groups]
    if any(sampled):  # untimed, as iter_certify's warm-up
        first = next(s for s in sampled if s)[0]
        smooth.warm_up(x[first].to(device), forward_batch_sizes((len(s) for s in sampled if s), n_p, batch))
    with progress_bar(progress, len(indices), sigma) as advance:
        for chosen, sample in zip(groups, sampled):
            start = time.perf_counter()
            disagreements = (smooth.count_true(x[sample].to(device), n_p, batch, keys=sample, draw=Draw.TRANSFER)
                             if sample else np.zeros(0, dtype=np.int64))
            seconds = (time.perf_counter() - start) / len(sample) if sample else 0.0
            d = dict(zip(sample, map(int, disagreements)))
            records = []
            for i in chosen:
                predict, radius = transfer_one(int(by_idx.at[i, "predict"]), float(by_idx.at[i, "radius"]), sigma,
                                               d.get(i, 0), n_p, alpha_zeta)
                records.append((i, int(y[i]), predict, radius, int(predict == int(y[i])),
                                seconds if i in d else 0.0, d.get(i, -1)))
            yield _frame(records), EngineSettings.of(smooth, batch, group, device, folded_batchnorms=folded)
            advance(len(chosen))


def _frame(records: list[tuple]) -> pd.DataFrame:
    columns = list(zip(*records)) if records else [()] * len(TRANSFER_COLUMNS)
    dtypes = (np.int64, np.int64, np.int64, np.float64, np.int64, np.float64, np.int64)
    return pd.DataFrame({name: np.asarray(col, dtype=dtype)
                         for name, col, dtype in zip(TRANSFER_COLUMNS, columns, dtypes)})
