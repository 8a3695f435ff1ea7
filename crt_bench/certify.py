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

import math
import re
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import numpy as np
import pandas as pd
import torch
from scipy.stats import beta, binomtest, norm

from crt_bench.batchnorm_fold import fold_batchnorm
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
# Precision settings
# --------------------------------------------------------------------------------------------------

PRECISIONS = ("fp32", "bf16", "fp16")
"""Precisions of the base classifier's forward pass: ``fp32`` (default) or autocast to bf16 / fp16."""

NOISE_DTYPE = "float32"
"""dtype of the Gaussian noise and of the noisy input, whatever the precision.

Randomized smoothing is unsound when the noise itself is sampled in low precision (Voracek & Hein,
ICLR 2023), so the noise is always drawn in float32 and added to the float32 image; only the base
classifier's forward runs under autocast.  The certificate is then a statement about the smoothed
version of the (deterministic) reduced-precision base classifier, which is what is evaluated.
"""

_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

CPU_AUTO_BATCH = 128
"""Noisy samples per forward pass on a CPU when no batch size is given.

With one batch per core (see ``cpu_workers``), 128 CIFAR-sized images per forward pass ran ResNet-20
about 1.5x faster than Cohen's 1000 on 2 cores (64 and 128 were within 10% of each other for
ResNet-20/110; 128 was 20% faster for MobileNetV3); see ``benchmarks/bench_certify.py``.
"""

CUDA_MAX_AUTO_BATCH = 16_384
"""Upper bound of the batch size chosen from free GPU memory."""

_GROUP_BATCHES = 16
"""certify_dataset certifies images in groups of about this many forward batches (see there)."""

_MAX_GROUP = 256


def check_precision(precision: str) -> str:
    """Return ``precision`` normalised (``"fp32"``, ``"bf16"`` or ``"fp16"``) or raise CrtBenchError."""
    key = str(precision).strip().lower()
    if key not in PRECISIONS:
        raise CrtBenchError(
            f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)} "
            f"(the noise is always sampled in {NOISE_DTYPE}; bf16/fp16 only autocast the base classifier)"
        )
    return key


# --------------------------------------------------------------------------------------------------
# The smoothed classifier
# --------------------------------------------------------------------------------------------------


class Smooth:
    """Gaussian-smoothed version of a base classifier, with CERTIFY and PREDICT.

    ``base_classifier`` maps a batch ``[B, C, H, W]`` of [0, 1] images to logits ``[B, num_classes]``
    (normalization, if any, is inside it).  It is switched to ``eval()`` mode before sampling, so
    batch-norm uses its running statistics.  ``generator`` (optional) makes the noise reproducible;
    it must live on the same device as the images.

    Sampling engine (statistics unchanged: every noisy copy has its own fresh float32 Gaussian draw,
    independent of every other copy's; only how the copies are packed and evaluated differs):

    * the noise is drawn in place into a float32 buffer on the image's device (no ``repeat`` copies of
      the image) and the image is added by broadcasting;
    * :meth:`certify_many` / :meth:`sample_counts` fill each forward batch with noisy copies of several
      images (and of an image's selection and estimation samples) and count per (image, class) with a
      scatter-add over ``segment * num_classes + class``; counts stay on the device until the end;
    * ``torch.inference_mode``; ``precision`` ``"bf16"`` / ``"fp16"`` autocasts the base classifier's
      forward only (:data:`NOISE_DTYPE`); ``compile=True`` wraps it in ``torch.compile``;
    * ``fold_batchnorm`` (default on): eval-mode batch norms (``BatchNorm2d``, timm's
      ``BatchNormAct2d``) that directly follow a ``Conv2d`` are folded into it in a private
      ``torch.fx`` copy of the model (checked against the model on a probe batch; the model as given
      is used when it cannot be traced or nothing can be folded; see :func:`fold_batchnorm`).  The copy
      is rebuilt when the model's parameters or buffers change in place;
    * ``channels_last`` (``None`` = automatic: on CUDA for models with a ``Conv2d``, and whenever the
      engine has its own folded copy, which is then stored NHWC too) makes the noisy batches NHWC;
    * ``cpu_workers`` (CPU only; ``None`` = automatic: ``torch.get_num_threads()`` workers for models
      with a ``Conv2d`` unless ``compile``, else 1): forward passes run in that many threads with one
      intra-op thread each (``torch.set_num_threads(1)`` for the duration of the call, restored
      after), so the base classifier must tolerate being called from several threads at once (any
      module in eval mode without Python-side state does); pass ``cpu_workers=1`` otherwise;
    * ``batch_size=None`` picks the batch size: from free memory on CUDA (probe forward pass of 64
      zeros), else :data:`CPU_AUTO_BATCH`.  A given batch size is used as given.
    """

    ABSTAIN = ABSTAIN

    def __init__(
        self,
        base_classifier: torch.nn.Module,
        num_classes: int,
        sigma: float,
        generator: torch.Generator | None = None,
        *,
        precision: str = "fp32",
        compile: bool = False,
        channels_last: bool | None = None,
        fold_batchnorm: bool = True,
        cpu_workers: int | None = None,
    ) -> None:
        if num_classes < 2:
            raise CrtBenchError(f"num_classes must be at least 2, got {num_classes}")
        if not sigma > 0:
            raise CrtBenchError(f"sigma must be positive, got {sigma}")
        self.base_classifier = base_classifier
        self.num_classes = int(num_classes)
        self.sigma = float(sigma)
        self.generator = generator
        self.precision = check_precision(precision)
        self.compile = bool(compile)
        self.channels_last = channels_last
        self.fold_batchnorm = bool(fold_batchnorm)
        self.cpu_workers = cpu_workers
        self._prepared_key: tuple | None = None
        self._prepared: Callable[[torch.Tensor], torch.Tensor] | None = None
        self._folded = 0
        self._auto_batch: dict[tuple, int] = {}
        self.last_batch_size: int | None = None
        """Batch size of the latest sampling call (the resolved one when ``batch_size=None``)."""

    @property
    def noise_dtype(self) -> str:
        return NOISE_DTYPE

    @property
    def folded_batchnorms(self) -> int:
        """How many BatchNorm2d layers the engine's model copy has folded (0: the model is used as given)."""
        return self._folded

    # -- CERTIFY / PREDICT ------------------------------------------------------------------------

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int | None = None
    ) -> tuple[int, float]:
        """CERTIFY: return ``(cA, radius)``, or ``(ABSTAIN, 0.0)``.

        ``n0`` selection samples pick ``cA``; ``n`` fresh estimation samples give ``nA``; the radius is
        :func:`radius_from_counts` of those.
        """
        _check_settings(alpha, n0=n0, n=n, **_given(batch_size))
        _check_image(x)
        return self.certify_many(x.unsqueeze(0), n0, n, alpha, batch_size)[0]

    def certify_many(
        self, images: torch.Tensor | Sequence[torch.Tensor], n0: int, n: int, alpha: float,
        batch_size: int | None = None,
    ) -> list[tuple[int, float]]:
        """CERTIFY each of ``images`` (``[K, C, H, W]`` or a list of ``[C, H, W]``); one result per image.

        Per image this is exactly :meth:`certify`: ``n0`` selection and ``n`` estimation samples, each
        with its own fresh noise, independent of every other image's.  Only the packing into forward
        batches is shared (a batch may hold the end of one image's samples and the start of the next's).
        """
        _check_settings(alpha, n0=n0, n=n, **_given(batch_size))
        stack = _stack_images(images)
        k = stack.shape[0]
        segments = [(i, num) for i in range(k) for num in (n0, n)]
        counts = self._stream_counts(stack, segments, batch_size)
        results = []
        for i in range(k):
            selection, estimation = counts[2 * i], counts[2 * i + 1]
            c_a = int(selection.argmax())  # ties -> lowest class index
            radius = radius_from_counts(int(estimation[c_a]), n, alpha, self.sigma)
            results.append((ABSTAIN, 0.0) if radius is None else (c_a, radius))
        return results

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int | None = None) -> int:
        """PREDICT: the top class of ``n`` noisy samples, or ``ABSTAIN`` (see :func:`predict_abstains`)."""
        _check_settings(alpha, n=n, **_given(batch_size))
        counts = self._sample_counts(x, n, batch_size)
        order = np.argsort(-counts, kind="stable")  # ties -> lowest class index first
        top, runner_up = int(order[0]), int(order[1])
        if predict_abstains(int(counts[top]), int(counts[runner_up]), alpha):
            return ABSTAIN
        return top

    def sample_counts(
        self, images: torch.Tensor | Sequence[torch.Tensor], num: int, batch_size: int | None = None
    ) -> np.ndarray:
        """``[K, num_classes]`` class histograms of ``argmax f(x_k + eps)`` over ``num`` draws per image."""
        _check_settings(0.5, num=num, **_given(batch_size))
        stack = _stack_images(images)
        return self._stream_counts(stack, [(i, num) for i in range(stack.shape[0])], batch_size)

    def _sample_counts(self, x: torch.Tensor, num: int, batch_size: int | None) -> np.ndarray:
        """Class histogram of ``argmax f(x + eps)`` over ``num`` noise draws for one image ``[C, H, W]``."""
        _check_image(x)
        return self._stream_counts(x.unsqueeze(0), [(0, num)], batch_size)[0]

    def auto_batch_size(self, image: torch.Tensor) -> int:
        """The batch size ``batch_size=None`` resolves to for images like ``image`` ``[C, H, W]`` on its device."""
        _check_image(image)
        images = image.unsqueeze(0).to(dtype=torch.float32)
        self.base_classifier.eval()
        model = self._model(image.device, tuple(image.shape))
        fmt = torch.channels_last if self._use_channels_last(image.device, images) else torch.contiguous_format
        return self._choose_batch(model, images, fmt)

    # -- the engine -------------------------------------------------------------------------------

    def _stream_counts(self, images: torch.Tensor, segments: list[tuple[int, int]],
                       batch_size: int | None) -> np.ndarray:
        """Counts ``[len(segments), num_classes]``; segment ``(i, num)`` = ``num`` noisy copies of image i.

        The segments are laid end to end in one stream of noisy samples, cut into forward batches.
        """
        device = images.device
        if self.generator is not None and self.generator.device != device:
            raise CrtBenchError(
                f"the noise generator is on {self.generator.device} but the image is on {device}; "
                "create the generator on the image's device"
            )
        images = images.to(dtype=torch.float32)
        self.base_classifier.eval()
        model = self._model(device, tuple(images.shape[1:]))
        fmt = torch.channels_last if self._use_channels_last(device, images) else torch.contiguous_format
        auto = batch_size is None
        b = self._choose_batch(model, images, fmt) if auto else int(batch_size)
        self.last_batch_size = b
        stream = _Stream(images, segments, self.num_classes, self.sigma, self.generator, fmt)
        workers = min(self._workers(device), math.ceil(stream.total / b))  # one batch: all threads on it
        with torch.inference_mode():
            if workers > 1:
                self._run_parallel(stream, model, b, workers)
            else:
                self._run_serial(stream, model, b, auto)
        return stream.counts.view(len(segments), self.num_classes).cpu().numpy()

    def _forward(self, model: Callable[[torch.Tensor], torch.Tensor], noisy: torch.Tensor) -> torch.Tensor:
        """``argmax`` of the base classifier's logits; autocast covers this forward pass only."""
        with torch.inference_mode(), self._autocast(noisy.device):
            logits = model(noisy)
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise CrtBenchError(
                f"base classifier returned shape {tuple(logits.shape)}, expected [batch, {self.num_classes}] logits"
            )
        return logits.argmax(dim=1)

    def _run_serial(self, stream: _Stream, model: Callable, b: int, auto: bool) -> None:
        buffer = stream.buffer(b)  # reused: the noise is drawn into it in place, batch after batch
        while not stream.done:
            noisy, where = stream.next_batch(buffer, b)
            try:
                predictions = self._forward(model, noisy)
            except torch.cuda.OutOfMemoryError:
                if not auto or b <= 8:
                    raise
                # discard this batch (its noise too: whether a batch fits does not depend on its votes)
                stream.rewind(where)
                b = self._shrink_batch(stream.images, b)
                self.last_batch_size = b
                buffer = stream.buffer(b)
                continue
            stream.count(predictions, where)

    def _run_parallel(self, stream: _Stream, model: Callable, b: int, workers: int) -> None:
        """CPU: ``workers`` threads with one intra-op thread each, each running whole forward passes.

        Small batches on one core each keep their activations in that core's cache and need no
        synchronisation between cores (which costs dearly when the cores are shared with other
        processes).  The noise is still drawn in order in this thread, so a generator gives
        reproducible counts.
        """
        pending: deque = deque()
        with _intra_op_threads(1), ThreadPoolExecutor(workers, thread_name_prefix="crt-certify") as pool:
            try:
                while not stream.done or pending:
                    while not stream.done and len(pending) < 2 * workers:
                        noisy, where = stream.next_batch(stream.buffer(b), b)
                        pending.append((pool.submit(self._forward, model, noisy), where))
                    future, where = pending.popleft()
                    stream.count(future.result(), where)
            finally:
                for future, _ in pending:
                    future.cancel()

    def _workers(self, device: torch.device) -> int:
        if device.type != "cpu" or self.compile:
            return 1
        if self.cpu_workers is not None:
            return max(1, int(self.cpu_workers))
        if not any(isinstance(m, torch.nn.Conv2d) for m in self.base_classifier.modules()):
            return 1  # cheap models are dominated by per-call overhead; threads would not help
        return max(1, torch.get_num_threads())

    def _autocast(self, device: torch.device):
        if self.precision == "fp32":
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[self.precision])

    def _use_channels_last(self, device: torch.device, images: torch.Tensor) -> bool:
        """NHWC noisy batches: as configured; by default for conv nets on CUDA, and on a CPU when the
        engine has its own (folded, NHWC) copy of the model.  Call after :meth:`_model`."""
        if images.dim() != 4:
            return False
        if self.channels_last is not None:
            return bool(self.channels_last)
        if self._folded:
            return True
        return device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in self.base_classifier.modules())

    def _model(self, device: torch.device, shape: tuple[int, ...]) -> Callable[[torch.Tensor], torch.Tensor]:
        """The module the engine calls: folded / channels-last / compiled as configured; cached."""
        base = self.base_classifier
        tensors = (*base.parameters(), *base.buffers())
        key = (id(base), str(device), shape, tuple((id(t), _version(t), t.device) for t in tensors))
        if self._prepared_key == key and self._prepared is not None:
            return self._prepared
        model: torch.nn.Module = base
        self._folded = 0
        if self.fold_batchnorm:
            folded, count = fold_batchnorm(base, shape)
            if folded is not None:
                model, self._folded = folded, count
                if self.channels_last is not False:
                    model = model.to(memory_format=torch.channels_last)  # our copy only
        if self.compile:
            model = torch.compile(model)
        self._prepared, self._prepared_key = model, key
        return model

    def _choose_batch(self, model: Callable, images: torch.Tensor, fmt: torch.memory_format) -> int:
        device = images.device
        if device.type != "cuda":
            return CPU_AUTO_BATCH
        key = (self._prepared_key, tuple(images.shape[1:]), self.precision, str(fmt))
        if key not in self._auto_batch:
            self._auto_batch[key] = _cuda_batch_from_memory(
                self.base_classifier if self.compile else model, images, fmt, self._autocast(device)
            )
        return self._auto_batch[key]

    def _shrink_batch(self, images: torch.Tensor, b: int) -> int:
        torch.cuda.empty_cache()
        smaller = max(8, b // 2)
        for key in [k for k in self._auto_batch if k[1] == tuple(images.shape[1:])]:
            self._auto_batch[key] = smaller
        return smaller


def _cuda_batch_from_memory(model: Callable, images: torch.Tensor, fmt: torch.memory_format, autocast) -> int:
    """Batch size that uses about half of the free GPU memory, from one probe forward pass of 64 zeros."""
    device = images.device
    probe = 64
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), autocast:
        x = torch.zeros((probe, *images.shape[1:]), dtype=torch.float32, device=device, memory_format=fmt)
        model(x)
        del x
    torch.cuda.synchronize(device)
    per_sample = max((torch.cuda.max_memory_allocated(device) - before) / probe, 1.0)
    free, _ = torch.cuda.mem_get_info(device)
    batch = int(0.5 * free / per_sample) // 64 * 64
    return int(min(max(batch, probe), CUDA_MAX_AUTO_BATCH))


class _Stream:
    """The noisy samples of one sampling call: segments laid end to end, cut into batches, counted."""

    def __init__(self, images: torch.Tensor, segments: list[tuple[int, int]], num_classes: int, sigma: float,
                 generator: torch.Generator | None, fmt: torch.memory_format) -> None:
        self.images, self.segments, self.c, self.sigma, self.generator = images, segments, num_classes, sigma, generator
        self.fmt = fmt
        sizes = np.asarray([num for _, num in segments], dtype=np.int64)
        self.ends = np.cumsum(sizes)
        self.starts = self.ends - sizes
        self.total = int(self.ends[-1])
        self.position = 0
        self.first = 0  # first segment not yet finished
        device = images.device
        self.counts = torch.zeros(len(segments) * num_classes, dtype=torch.long, device=device)
        self._ones: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        return self.position >= self.total

    def buffer(self, b: int) -> torch.Tensor:
        """Storage for up to ``b`` noisy samples: ``[b, C, H, W]``, or ``[b, H, W, C]`` for channels-last.

        The noise is drawn into the storage as a contiguous tensor: ``normal_`` on a channels-last
        strided tensor takes a slow element-wise path (about 9x slower on a CPU).
        """
        m = min(b, self.total - self.position)
        shape = self.images.shape[1:]
        if self.fmt == torch.channels_last:
            shape = (*shape[1:], shape[0])
        return torch.empty((m, *shape), dtype=torch.float32, device=self.images.device)

    def next_batch(self, buffer: torch.Tensor, b: int) -> tuple[torch.Tensor, tuple]:
        """The next ``<= b`` noisy samples (fresh float32 noise drawn in place into ``buffer``)."""
        position = self.position
        m = min(b, self.total - position, len(buffer))
        raw = buffer[:m]
        raw.normal_(0.0, self.sigma, generator=self.generator)
        noisy = raw.permute(0, 3, 1, 2) if self.fmt == torch.channels_last else raw  # NCHW view either way
        while self.ends[self.first] <= position:
            self.first += 1
        pieces = []  # (segment, lo, hi): the batch rows holding that segment's samples
        segment = self.first
        while True:  # add each image to its slice of the batch (broadcast, no copies)
            lo = max(int(self.starts[segment]), position) - position
            hi = min(int(self.ends[segment]), position + m) - position
            noisy[lo:hi].add_(self.images[self.segments[segment][0]])
            pieces.append((segment, lo, hi))
            if self.ends[segment] >= position + m:
                break
            segment += 1
        self.position += m
        return noisy, (position, m, pieces)

    def rewind(self, where: tuple) -> None:
        self.position = where[0]

    def count(self, predictions: torch.Tensor, where: tuple[int, int, list[tuple[int, int, int]]]) -> None:
        """Add the votes of one batch: ``counts[segment * num_classes + class] += 1`` per sample.

        A scatter-add (``index_add_``) rather than ``bincount``, which synchronises with a GPU.
        """
        _, m, pieces = where
        bins = predictions.clone() if len(pieces) > 1 or pieces[0][0] else predictions
        for segment, lo, hi in pieces:
            if segment:
                bins[lo:hi] += segment * self.c
        if self._ones is None or len(self._ones) < m:
            self._ones = torch.ones(m, dtype=torch.long, device=predictions.device)
        self.counts.index_add_(0, bins, self._ones[:m])


@contextmanager
def _intra_op_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _version(tensor: torch.Tensor) -> int:
    """In-place modification counter (inference tensors have none and cannot be modified outside it)."""
    try:
        return tensor._version
    except RuntimeError:
        return -1


def _given(batch_size: int | None) -> dict[str, int]:
    return {} if batch_size is None else {"batch_size": batch_size}


def _check_image(x: torch.Tensor) -> None:
    if x.dim() != 3:
        raise CrtBenchError(f"certify/predict take one image [C, H, W], got shape {tuple(x.shape)}")


def _stack_images(images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise CrtBenchError(f"expected images [K, C, H, W], got shape {tuple(images.shape)}")
        stack = images
    else:
        images = list(images)
        for image in images:
            _check_image(image)
        if not images:
            raise CrtBenchError("no images given")
        stack = torch.stack(images)
    if stack.shape[0] < 1:
        raise CrtBenchError("no images given")
    return stack


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
    batch_size: int | None,
    indices: list[int],
    generator: torch.Generator | None = None,
    progress: bool = True,
    precision: str = "fp32",
    compile: bool = False,
) -> pd.DataFrame:
    """Run CERTIFY on ``x[i]`` for each ``i`` in ``indices``; one row per image.

    Columns (:data:`CERTIFY_COLUMNS`): ``idx`` (index into the split, not the position in the subset),
    ``label``, ``predict`` (``-1`` = abstain), ``radius`` (full precision, 0.0 on abstain), ``correct``
    (1 iff predict == label), ``seconds`` (wall time of the certification, see below), and the settings
    ``n0, n, alpha, sigma``.  Images are moved to the model's device (that of its first parameter or
    buffer; ``x``'s device for a parameter-free model) before the timer starts.

    Images are certified in groups with :meth:`Smooth.certify_many` (per-image statistics exactly those
    of :meth:`Smooth.certify`), a group being as many images as fill about 16 forward batches (one
    image when ``n0 + n`` is that large already, at most 256); ``seconds`` is the group's wall time
    divided by its number of images.  ``batch_size=None`` lets :class:`Smooth` choose it;
    ``precision`` and ``compile`` are passed to :class:`Smooth`.  The engine settings actually used are
    in ``frame.attrs``: ``batch_size``, ``precision``, ``noise_dtype``, ``compile``,
    ``folded_batchnorms``, ``images_per_group``.
    """
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y):
        raise CrtBenchError(f"expected images [N, C, H, W] and labels [N], got {tuple(x.shape)} and {tuple(y.shape)}")
    bad = [i for i in indices if not 0 <= i < len(x)]
    if bad:
        raise CrtBenchError(f"image indices out of range 0..{len(x) - 1}: {bad[:5]}")
    _check_settings(alpha, n0=n0, n=n, **_given(batch_size))
    smooth = Smooth(model, num_classes, sigma, generator=generator, precision=precision, compile=compile)
    device = _module_device(model, default=x.device)
    batch = batch_size if batch_size is not None else smooth.auto_batch_size(x[0].to(device))
    group = min(_MAX_GROUP, max(1, math.ceil(_GROUP_BATCHES * batch / (n0 + n))))

    records: list[tuple[int, int, int, float, int, float]] = []
    with _progress_bar(progress, len(indices), sigma) as advance:
        for start_at in range(0, len(indices), group):
            chosen = indices[start_at : start_at + group]
            images = x[chosen].to(device)
            start = time.perf_counter()
            results = smooth.certify_many(images, n0, n, alpha, batch)
            seconds = (time.perf_counter() - start) / len(chosen)
            for i, (prediction, radius) in zip(chosen, results):
                label = int(y[i])
                records.append((int(i), label, prediction, radius, int(prediction == label), seconds))
            advance(len(chosen))

    columns = list(zip(*records)) if records else [()] * 6
    dtypes = (np.int64, np.int64, np.int64, np.float64, np.int64, np.float64)
    frame = pd.DataFrame(
        {name: np.asarray(col, dtype=dtype) for name, col, dtype in zip(CERTIFY_COLUMNS[:6], columns, dtypes)}
    )
    frame["n0"] = np.int64(n0)
    frame["n"] = np.int64(n)
    frame["alpha"] = np.float64(alpha)
    frame["sigma"] = np.float64(sigma)
    frame = frame[list(CERTIFY_COLUMNS)]
    frame.attrs.update(batch_size=int(batch), precision=smooth.precision, noise_dtype=smooth.noise_dtype,
                       compile=smooth.compile, folded_batchnorms=smooth.folded_batchnorms,
                       images_per_group=int(group))
    return frame


def _module_device(model: torch.nn.Module, default: torch.device) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return default


@contextmanager
def _progress_bar(enabled: bool, total: int, sigma: float) -> Iterator[Callable[..., None]]:
    """Yield an ``advance(steps=1)`` callable; shows a transient rich progress bar when ``enabled``."""
    if not enabled:
        yield lambda steps=1: None
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
        yield lambda steps=1: bar.advance(task, steps)


__all__ = [
    "ABSTAIN",
    "CERTIFY_COLUMNS",
    "NOISE_DTYPE",
    "PRECISIONS",
    "Smooth",
    "certify_dataset",
    "check_precision",
    "counts_for_radius",
    "fold_batchnorm",
    "lower_confidence_bound",
    "parse_subset",
    "predict_abstains",
    "radius_from_counts",
]
