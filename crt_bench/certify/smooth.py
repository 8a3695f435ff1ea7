"""The smoothed classifier: :class:`Smooth` with CERTIFY and PREDICT, as in Cohen et al.'s ``core.py``.

:meth:`Smooth.certify_counts` is CERTIFY, the statistics in one place: pick ``cA`` from ``n0`` selection
counts, count ``nA`` among ``n`` fresh estimation samples, ``pA_lower`` (Clopper-Pearson), then abstain or
return the radius ``sigma * Phi^-1(pA_lower)``.  The noisy samples and their counting are the sampling
engine's (:class:`~crt_bench.certify.engine.SamplingEngine`, its speed options documented there).  Call
chain to the forward pass: ``certify`` -> ``certify_counts`` -> ``SamplingEngine._count`` -> ``_forward``
-> the base classifier.
"""
from __future__ import annotations

from collections.abc import Sequence
from enum import IntEnum

import numpy as np
import torch
from scipy.stats import norm

from crt_bench.certify.early_stop import AbstainCheck
from crt_bench.certify.engine import SamplingEngine
from crt_bench.certify.stats import ABSTAIN, Certificate, check_settings, lower_confidence_bound, predict_abstains
from crt_bench.certify.stream import check_image, stack_images
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.seeding import mix_seed


class Draw(IntEnum):
    """Which noise an image's keyed draws are (a segment's seed is ``mix_seed(noise_seed, key, draw)``).

    The values are part of every keyed-noise row ever certified: never renumber them.
    """

    SELECTION = 0  # CERTIFY's n0 samples that pick cA
    ESTIMATION = 1  # CERTIFY's n fresh samples that count nA
    SAMPLING = 2  # PREDICT's and sample_counts' samples
    TRANSFER = 3  # incremental smoothing's disagreement samples (crt_bench.certify.transfer)


class Smooth(SamplingEngine):
    """Gaussian-smoothed version of a base classifier, with CERTIFY and PREDICT.

    ``base_classifier`` maps a batch ``[B, C, H, W]`` of [0, 1] images to logits ``[B, num_classes]``
    (normalization, if any, is inside it).  It is switched to ``eval()`` mode before sampling, so
    batch-norm uses its running statistics.  ``generator`` (optional) makes the noise reproducible;
    it must live on the same device as the images.  ``noise_seed`` (instead of a generator) gives every
    image its own noise, a function of (noise_seed, the image's key, :class:`Draw`, position) only: the key
    is the image's index given to :meth:`certify_many` (``keys``), so an image's result does not depend on
    which other images share the call or how they are batched (:mod:`crt_bench.certify.stream`).

    The engine's options (``precision`` including ``fastest``, ``compile``, ``fold_batchnorm``,
    ``channels_last``, ``cpu_workers``, ``early_stop``, ``batch_size=None``) are described in
    :mod:`crt_bench.certify.engine`; none changes the statistics.
    """

    ABSTAIN = ABSTAIN

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int | None = None
    ) -> tuple[int, float]:
        """CERTIFY one image ``[C, H, W]``: return ``(cA, radius)``, or ``(ABSTAIN, 0.0)``."""
        check_image(x)
        c = self.certify_counts(x.unsqueeze(0), n0, n, alpha, batch_size)[0]
        return c.predict, c.radius

    def certify_many(
        self, images: torch.Tensor | Sequence[torch.Tensor], n0: int, n: int, alpha: float,
        batch_size: int | None = None, keys: Sequence[int] | None = None,
    ) -> list[tuple[int, float]]:
        """CERTIFY each of ``images`` (``[K, C, H, W]`` or a list of ``[C, H, W]``); one ``(cA, radius)`` per image."""
        return [(c.predict, c.radius) for c in self.certify_counts(images, n0, n, alpha, batch_size, keys)]

    def certify_counts(
        self, images: torch.Tensor | Sequence[torch.Tensor], n0: int, n: int, alpha: float,
        batch_size: int | None = None, keys: Sequence[int] | None = None,
    ) -> list[Certificate]:
        """CERTIFY each image, with the counts behind its row (:class:`~crt_bench.certify.stats.Certificate`).

        Per image exactly :meth:`certify`: ``n0`` selection and ``n`` estimation samples, each with its own
        fresh noise, independent of every other image's; only the packing into forward batches is shared.
        ``keys`` (default ``0..K-1``) name the images for keyed noise (``noise_seed``).
        """
        check_settings(alpha, n0=n0, n=n, **batch_kwargs(batch_size))
        stack = stack_images(images)
        k = stack.shape[0]
        # segments 2i and 2i + 1: image i's selection (n0) and estimation (n) samples, noise of their own
        segments = [(i, num) for i in range(k) for num in (n0, n)]
        seeds = self._segment_seeds(keys, k, (Draw.SELECTION, Draw.ESTIMATION))
        stop = (lambda stream: AbstainCheck(stream, n0, n, alpha)) if self.early_stop and seeds else None
        counts = self._count(stack, segments, batch_size, seeds, self._top_class, self.num_classes, stop)
        rows = []
        for i in range(k):
            selection, estimation = counts[2 * i], counts[2 * i + 1]
            c_a = int(selection.argmax())  # the guess: the most frequent class of n0 (ties: the lowest index)
            n_a = int(estimation[c_a])  # how often the fresh samples say cA
            p_a_lower = lower_confidence_bound(n_a, n, alpha)  # one-sided (1 - alpha) Clopper-Pearson bound
            if p_a_lower < 0.5:
                predict, radius = ABSTAIN, 0.0
            else:
                predict, radius = c_a, float(self.sigma * norm.ppf(p_a_lower))
            counted = int(self.last_counted[2 * i + 1])  # < n where early abstention stopped the image
            rows.append(Certificate(c_a, int(selection[c_a]), n_a, counted, int(n), p_a_lower, predict, radius))
        return rows

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int | None = None) -> int:
        """PREDICT: the top class of ``n`` noisy samples, or ``ABSTAIN`` (see :func:`predict_abstains`)."""
        check_settings(alpha, n=n, **batch_kwargs(batch_size))
        check_image(x)
        counts = self.sample_counts(x.unsqueeze(0), n, batch_size)[0]  # keyed noise: the image's key is 0
        order = np.argsort(-counts, kind="stable")  # ties -> lowest class index first
        top, runner_up = int(order[0]), int(order[1])
        return ABSTAIN if predict_abstains(int(counts[top]), int(counts[runner_up]), alpha) else top

    def sample_counts(
        self, images: torch.Tensor | Sequence[torch.Tensor], num: int, batch_size: int | None = None,
        keys: Sequence[int] | None = None, draw: Draw = Draw.SAMPLING,
    ) -> np.ndarray:
        """``[K, num_classes]`` class histograms of ``argmax f(x_k + eps)`` over ``num`` draws per image."""
        check_settings(0.5, num=num, **batch_kwargs(batch_size))
        stack = stack_images(images)
        k = stack.shape[0]
        return self._count(stack, [(i, num) for i in range(k)], batch_size, self._segment_seeds(keys, k, (draw,)),
                           self._top_class, self.num_classes)

    def count_true(
        self, images: torch.Tensor | Sequence[torch.Tensor], num: int, batch_size: int | None = None,
        keys: Sequence[int] | None = None, draw: Draw = Draw.TRANSFER,
    ) -> np.ndarray:
        """``[K]``: for a base classifier that is a predicate (one bool per input, e.g. the transfer's
        :class:`~crt_bench.certify.transfer.Disagree`: teacher and student predict differently), how many of
        ``num`` noisy copies of each image it holds for."""
        check_settings(0.5, num=num, **batch_kwargs(batch_size))
        stack = stack_images(images)
        k = stack.shape[0]
        counts = self._count(stack, [(i, num) for i in range(k)], batch_size, self._segment_seeds(keys, k, (draw,)),
                             _true, 2)
        return counts[:, 1]  # the votes are False (0) and True (1)

    def _top_class(self, logits: torch.Tensor) -> torch.Tensor:
        """``argmax`` of the base classifier's logits ``[B, num_classes]``: each noisy copy's class."""
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise CrtBenchError(
                f"base classifier returned shape {tuple(logits.shape)}, expected [batch, {self.num_classes}] logits"
            )
        return logits.argmax(dim=1)

    def _segment_seeds(self, keys: Sequence[int] | None, k: int, draws: tuple[Draw, ...]) -> list[int] | None:
        """One seed per segment (image-major, then ``draws``) for keyed noise; None without a noise_seed."""
        if self.noise_seed is None:
            return None
        keys = list(range(k)) if keys is None else [int(key) for key in keys]
        if len(keys) != k:
            raise CrtBenchError(f"got {len(keys)} keys for {k} images")
        return [mix_seed(self.noise_seed, key, int(draw)) for key in keys for draw in draws]


def _true(predicate: torch.Tensor) -> torch.Tensor:
    """A predicate's output ``[B]`` (bool) as votes 0 / 1."""
    if predicate.dim() != 1 or predicate.dtype != torch.bool:
        raise CrtBenchError(f"a predicate returns one bool per input, got {predicate.dtype} {tuple(predicate.shape)}")
    return predicate.long()


def batch_kwargs(batch_size: int | None) -> dict[str, int]:
    return {} if batch_size is None else {"batch_size": batch_size}
