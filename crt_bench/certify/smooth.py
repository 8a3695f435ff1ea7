"""The smoothed classifier: :class:`Smooth` with CERTIFY and PREDICT, and its batched sampling engine
(described in :mod:`crt_bench.certify`).

Cohen et al.'s ``core.py`` is the model: one class, ``certify`` and ``predict`` reading as the
algorithm; the statistics live in :mod:`crt_bench.certify.stats`, the noisy-sample stream in
:mod:`crt_bench.certify.stream`.
"""
from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext

import numpy as np
import torch

from crt_bench.certify.batching import CPU_AUTO_BATCH, cuda_batch_from_memory, intra_op_threads
from crt_bench.certify.early_stop import AbstainCheck
from crt_bench.certify.precision import uses_tf32
from crt_bench.certify.prepare import (PreparedModels, candidates, fastest_precision, forward_context,
                                      time_forwards)
from crt_bench.certify.stats import ABSTAIN, Certificate, certificate, check_settings, predict_abstains
from crt_bench.certify.stream import SampleStream, as_nchw, check_image, sample_storage, stack_images
from crt_bench.config.choices import NOISE_DTYPE, Precision, check_precision
from crt_bench.core.checks import check_sigma
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.provenance import synchronize
from crt_bench.core.seeding import mix_seed
from crt_bench.core.tf32 import check_tf32, in_force_under, tf32_mode

log = logging.getLogger(__name__)

SELECTION, ESTIMATION, SAMPLING, TRANSFER = 0, 1, 2, 3
"""Segment kinds of keyed noise: an image's selection, estimation, PREDICT/sample_counts and transfer draws."""


class Smooth:
    """Gaussian-smoothed version of a base classifier, with CERTIFY and PREDICT.

    ``base_classifier`` maps a batch ``[B, C, H, W]`` of [0, 1] images to logits ``[B, num_classes]``
    (normalization, if any, is inside it).  It is switched to ``eval()`` mode before sampling, so
    batch-norm uses its running statistics.  ``generator`` (optional) makes the noise reproducible;
    it must live on the same device as the images.  ``noise_seed`` (instead of a generator) gives every
    image its own noise, a function of (noise_seed, the image's key, position) only: the key is the
    image's index given to :meth:`certify_many` (``keys``), so an image's result does not depend on
    which other images share the call or how they are batched (:mod:`crt_bench.certify.stream`).

    The sampling engine and its options (``precision`` including ``fastest``, ``compile``,
    ``fold_batchnorm``, ``channels_last``, ``cpu_workers``, ``early_stop``, ``batch_size=None``) are
    described in :mod:`crt_bench.certify` (package docstring); none changes the statistics.
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
        noise_seed: int | None = None,
        early_stop: bool = True,
    ) -> None:
        if num_classes < 2:
            raise CrtBenchError(f"num_classes must be at least 2, got {num_classes}")
        check_sigma(sigma)
        if noise_seed is not None and generator is not None:
            raise CrtBenchError("give either a noise generator or a noise_seed, not both")
        self.base_classifier, self.num_classes, self.sigma = base_classifier, int(num_classes), float(sigma)
        self.generator = generator
        self.requested_precision = requested = check_precision(precision)
        self._chosen: str | None = None if requested == Precision.FASTEST.value else requested
        self.compile, self.channels_last, self.fold_batchnorm = bool(compile), channels_last, bool(fold_batchnorm)
        self.cpu_workers = cpu_workers
        self.noise_seed = None if noise_seed is None else int(noise_seed)
        self.early_stop = bool(early_stop)
        self._models = PreparedModels(compile=self.compile, fold=self.fold_batchnorm, channels_last=channels_last)
        self.precision_timings: dict[str, float] = {}
        """Seconds of one forward batch per candidate precision, when ``fastest`` has chosen."""
        self.last_samples = 0
        """Noisy samples evaluated by the latest sampling call (fewer than asked when CERTIFY stopped early)."""
        self.last_counted = np.zeros(0, dtype=np.int64)  # samples counted per segment by the latest call
        self._auto_batch: dict[tuple, int] = {}
        self.last_batch_size: int | None = None
        """Batch size of the latest sampling call (the resolved one when ``batch_size=None``)."""

    @property
    def precision(self) -> str:
        """The forward precision in use: as given, or what ``fastest`` chose (``fastest`` until it has)."""
        return self._chosen or self.requested_precision

    @property
    def noise_dtype(self) -> str:
        return NOISE_DTYPE

    @property
    def folded_batchnorms(self) -> int:
        """How many BatchNorm2d layers the engine's model copy has folded (0: the model is used as given)."""
        return self._models.folded

    # -- CERTIFY / PREDICT ------------------------------------------------------------------------

    def certify(
        self, x: torch.Tensor, n0: int, n: int, alpha: float, batch_size: int | None = None
    ) -> tuple[int, float]:
        """CERTIFY: return ``(cA, radius)``, or ``(ABSTAIN, 0.0)``.

        ``n0`` selection samples pick ``cA``; ``n`` fresh estimation samples give ``nA``; the radius is
        :func:`~crt_bench.certify.stats.certificate` of those.
        """
        check_settings(alpha, n0=n0, n=n, **batch_kwargs(batch_size))
        check_image(x)
        return self.certify_many(x.unsqueeze(0), n0, n, alpha, batch_size)[0]

    def certify_many(
        self, images: torch.Tensor | Sequence[torch.Tensor], n0: int, n: int, alpha: float,
        batch_size: int | None = None, keys: Sequence[int] | None = None,
    ) -> list[tuple[int, float]]:
        """CERTIFY each of ``images`` (``[K, C, H, W]`` or a list of ``[C, H, W]``); one result per image.

        Per image this is exactly :meth:`certify`: ``n0`` selection and ``n`` estimation samples, each
        with its own fresh noise, independent of every other image's.  Only the packing into forward
        batches is shared (a batch may hold the end of one image's samples and the start of the next's).
        ``keys`` (default ``0..K-1``) name the images for keyed noise (``noise_seed``).
        """
        return [(c.predict, c.radius) for c in self.certify_counts(images, n0, n, alpha, batch_size, keys)]

    def certify_counts(
        self, images: torch.Tensor | Sequence[torch.Tensor], n0: int, n: int, alpha: float,
        batch_size: int | None = None, keys: Sequence[int] | None = None,
    ) -> list[Certificate]:
        """:meth:`certify_many` with the counts behind each row (:class:`~crt_bench.certify.stats.Certificate`)."""
        check_settings(alpha, n0=n0, n=n, **batch_kwargs(batch_size))
        stack = stack_images(images)
        k = stack.shape[0]
        segments = [(i, num) for i in range(k) for num in (n0, n)]
        seeds = self._segment_seeds(keys, k, (SELECTION, ESTIMATION))
        stop = (lambda stream: AbstainCheck(stream, n0, n, alpha)) if self.early_stop and seeds else None
        counts = self._stream_counts(stack, segments, batch_size, seeds, stop)
        c_as, drawn = [int(counts[2 * i].argmax()) for i in range(k)], self.last_counted  # argmax ties: lowest class
        return [certificate(c_a, int(counts[2 * i, c_a]), int(counts[2 * i + 1, c_a]), int(drawn[2 * i + 1]), n, alpha,
                            self.sigma) for i, c_a in enumerate(c_as)]

    def predict(self, x: torch.Tensor, n: int, alpha: float, batch_size: int | None = None) -> int:
        """PREDICT: the top class of ``n`` noisy samples, or ``ABSTAIN`` (see :func:`predict_abstains`)."""
        check_settings(alpha, n=n, **batch_kwargs(batch_size))
        counts = self._sample_counts(x, n, batch_size)
        order = np.argsort(-counts, kind="stable")  # ties -> lowest class index first
        top, runner_up = int(order[0]), int(order[1])
        return ABSTAIN if predict_abstains(int(counts[top]), int(counts[runner_up]), alpha) else top

    def sample_counts(
        self, images: torch.Tensor | Sequence[torch.Tensor], num: int, batch_size: int | None = None,
        keys: Sequence[int] | None = None, kind: int = SAMPLING,
    ) -> np.ndarray:
        """``[K, num_classes]`` class histograms of ``argmax f(x_k + eps)`` over ``num`` draws per image
        (keyed noise of segment ``kind``: :data:`TRANSFER` for incremental smoothing's fresh draws)."""
        check_settings(0.5, num=num, **batch_kwargs(batch_size))
        stack = stack_images(images)
        k = stack.shape[0]
        return self._stream_counts(stack, [(i, num) for i in range(k)], batch_size,
                                   self._segment_seeds(keys, k, (kind,)))

    def _sample_counts(self, x: torch.Tensor, num: int, batch_size: int | None) -> np.ndarray:
        """Class histogram of ``argmax f(x + eps)`` over ``num`` noise draws for one image ``[C, H, W]``."""
        check_image(x)
        return self._stream_counts(x.unsqueeze(0), [(0, num)], batch_size, self._segment_seeds(None, 1, (SAMPLING,)))[0]

    def _segment_seeds(self, keys: Sequence[int] | None, k: int, kinds: tuple[int, ...]) -> list[int] | None:
        """One seed per segment (image-major, then ``kinds``) for keyed noise; None without a noise_seed."""
        if self.noise_seed is None:
            return None
        keys = list(range(k)) if keys is None else [int(key) for key in keys]
        if len(keys) != k:
            raise CrtBenchError(f"got {len(keys)} keys for {k} images")
        return [mix_seed(self.noise_seed, key, kind) for key in keys for kind in kinds]

    def auto_batch_size(self, image: torch.Tensor) -> int:
        """The batch size ``batch_size=None`` resolves to for images like ``image`` ``[C, H, W]`` on its device."""
        check_image(image)
        images = image.unsqueeze(0).to(dtype=torch.float32)
        with self._tf32(image.device):
            self.base_classifier.eval()
            model = self._model(image.device, tuple(image.shape), self._chosen or "fp32")
            return self._choose_batch(model, images, self._format(image.device, images))

    def warm_up(self, image: torch.Tensor, batch_sizes: Sequence[int]) -> None:
        """Untimed forward passes at each of ``batch_sizes`` (:func:`~crt_bench.certify.batching.forward_batch_sizes`).

        Builds the engine's model (folding, ``torch.compile`` of each batch shape, cuDNN's algorithm
        choice, the allocator) on zeros laid out as noisy copies of ``image`` ``[C, H, W]`` are, so that
        timed sampling starts warm; precision ``fastest`` chooses here (at the largest batch size).  No
        noise is drawn (neither the generator, the global RNG nor the keyed noise is touched): every row
        is what it is without the warm-up.
        """
        check_image(image)
        device, shape = image.device, tuple(image.shape)
        images = image.unsqueeze(0).to(dtype=torch.float32)
        with self._tf32(device):
            self.base_classifier.eval()
            self._choose_precision(images, max(map(int, batch_sizes), default=1))
            model = self._model(device, shape, self.precision)
            fmt = self._format(device, images)
            try:
                with torch.inference_mode(), self._threads(device):  # as the sampling's batches: inference tensors
                    for b in [max(batch_sizes)] if self.compile and batch_sizes else batch_sizes:  # padded
                        self._forward(model, as_nchw(sample_storage(int(b), shape, fmt, device).zero_(), fmt))
            except torch.cuda.OutOfMemoryError:  # the sampling itself shrinks an automatic batch, as without this
                torch.cuda.empty_cache()
        synchronize(device)

    def tf32_in_force(self, device: torch.device) -> bool:
        """Whether this engine's forward passes on ``device`` run in TF32 (recorded with every row)."""
        return in_force_under(uses_tf32(self.precision), device)

    @contextmanager
    def _tf32(self, device: torch.device) -> Iterator[None]:
        """TF32 on for precision ``tf32`` (refused where the device cannot honour it), off otherwise."""
        check_tf32(uses_tf32(self.precision), device, "precision tf32")
        with tf32_mode(uses_tf32(self.precision)):
            yield

    # -- the engine -------------------------------------------------------------------------------

    def _stream_counts(self, images: torch.Tensor, segments: list[tuple[int, int]], batch_size: int | None,
                       seeds: list[int] | None = None, stop: Callable[[SampleStream], Callable] | None = None
                       ) -> np.ndarray:
        """Counts ``[len(segments), num_classes]``; segment ``(i, num)`` = ``num`` noisy copies of image i.

        The segments are laid end to end in one stream of noisy samples, cut into forward batches.
        ``stop(stream)`` (optional) gives a check run after each counted batch that may cut segments short.
        """
        device = images.device
        if self.generator is not None and self.generator.device != device:
            raise CrtBenchError(
                f"the noise generator is on {self.generator.device} but the image is on {device}; "
                "create the generator on the image's device"
            )
        images = images.to(dtype=torch.float32)
        with self._tf32(device):
            self.base_classifier.eval()
            auto = batch_size is None
            if self._chosen is None:
                self._choose_precision(images[:1], CPU_AUTO_BATCH if auto else int(batch_size))
            model = self._model(device, tuple(images.shape[1:]), self.precision)
            fmt = self._format(device, images)
            b = self._choose_batch(model, images, fmt) if auto else int(batch_size)
            self.last_batch_size = b
            stream = SampleStream(images, segments, self.num_classes, self.sigma, self.generator, fmt, seeds)
            check = stop(stream) if stop is not None else None
            workers = min(self._workers(device), math.ceil(stream.total / b))  # before _threads sets 1 thread
            with torch.inference_mode(), self._threads(device):
                if workers > 1:
                    self._run_parallel(stream, model, b, workers, check)
                else:
                    self._run_serial(stream, model, b, auto, check)
            self.last_samples, self.last_counted = stream.total, stream.counted.copy()
        return stream.counts.view(len(segments), self.num_classes).cpu().numpy()

    def _forward(self, model: Callable[[torch.Tensor], torch.Tensor], noisy: torch.Tensor, m: int | None = None
                 ) -> torch.Tensor:
        """``argmax`` of the base classifier's logits for the first ``m`` rows (default: all); autocast covers
        this forward pass only.  A compiled model always gets the whole buffer (one static shape)."""
        casts = self._models.casts(self.precision)
        with torch.inference_mode(), forward_context(self.precision, noisy.device, casts):
            logits = model(noisy)
        if logits.dim() != 2 or logits.shape[1] != self.num_classes:
            raise CrtBenchError(
                f"base classifier returned shape {tuple(logits.shape)}, expected [batch, {self.num_classes}] logits"
            )
        return logits.argmax(dim=1) if m is None else logits[:m].argmax(dim=1)

    def _next(self, stream: SampleStream, buffer: torch.Tensor, b: int) -> tuple[torch.Tensor, int | None, tuple]:
        """The next batch as the model takes it: a compiled model the whole (padded) buffer."""
        noisy, where = stream.next_batch(buffer, b)
        if self.compile and where[1] < len(buffer):
            return as_nchw(buffer, stream.fmt), where[1], where
        return noisy, None, where

    def _run_serial(self, stream: SampleStream, model: Callable, b: int, auto: bool, check: Callable | None) -> None:
        buffer = stream.buffer(b)  # reused: the noise is drawn into it in place, batch after batch
        while not stream.done:
            noisy, m, where = self._next(stream, buffer, b)
            try:
                predictions = self._forward(model, noisy, m)
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
            if check is not None:
                check()

    def _run_parallel(self, stream: SampleStream, model: Callable, b: int, workers: int, check: Callable | None
                      ) -> None:
        """CPU: ``workers`` threads with one intra-op thread each, each running whole forward passes.

        Small batches on one core each keep their activations in that core's cache and need no
        synchronisation between cores (which costs dearly when the cores are shared with other
        processes).  The noise is still drawn in order in this thread, so a generator gives
        reproducible counts.
        """
        pending: deque = deque()
        full = min(b, stream.total)
        with ThreadPoolExecutor(workers, thread_name_prefix="crt-certify") as pool:
            try:
                while not stream.done or pending:
                    while not stream.done and len(pending) < 2 * workers:
                        buffer = sample_storage(full, tuple(stream.images.shape[1:]), stream.fmt, stream.images.device)
                        noisy, m, where = self._next(stream, buffer, b)
                        pending.append((pool.submit(self._forward, model, noisy, m), where))
                    future, where = pending.popleft()
                    stream.count(future.result(), where)
                    if check is not None:
                        check()
            finally:
                for future, _ in pending:
                    future.cancel()

    def _workers(self, device: torch.device) -> int:
        if device.type != "cpu":
            return 1
        if self.cpu_workers is not None:
            return max(1, int(self.cpu_workers))
        if not any(isinstance(m, torch.nn.Conv2d) for m in self.base_classifier.modules()):
            return 1  # cheap models are dominated by per-call overhead; threads would not help
        return max(1, torch.get_num_threads())

    def _threads(self, device: torch.device):
        """One intra-op thread while forward passes run in several CPU workers (also while compiling: inductor
        fixes a kernel's thread count when it generates it); torch's setting otherwise."""
        return intra_op_threads(1) if self._workers(device) > 1 else nullcontext()

    def _choose_precision(self, images: torch.Tensor, b: int) -> None:
        """Precision ``fastest``: time one forward batch of ``b`` zeros in each candidate, keep the fastest."""
        if self._chosen is not None:
            return
        device, shape = images.device, tuple(images.shape[1:])
        models = {precision: self._model(device, shape, precision) for precision in candidates(device)}
        fmt = self._format(device, images)
        batch = as_nchw(sample_storage(b, shape, fmt, device).zero_(), fmt)
        with self._threads(device):
            timings = time_forwards({p: (model, forward_context(p, device, self._models.casts(p)))
                                     for p, model in models.items()}, batch)
        self._chosen, self.precision_timings = fastest_precision(timings), timings
        log.info("precision fastest: %s (one forward of %d: %s)", self._chosen, b,
                 ", ".join(f"{p} {1e3 * s:.1f} ms" for p, s in timings.items()))

    def _format(self, device: torch.device, images: torch.Tensor) -> torch.memory_format:
        """NHWC noisy batches: as configured; by default for conv nets on CUDA, and on a CPU when the
        engine has its own (folded, NHWC) copy of the model.  Call after :meth:`_model`."""
        if images.dim() != 4:
            return torch.contiguous_format
        if self.channels_last is not None:
            nhwc = bool(self.channels_last)
        elif self._models.folded:
            nhwc = True
        else:
            nhwc = device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in self.base_classifier.modules())
        return torch.channels_last if nhwc else torch.contiguous_format

    def _model(self, device: torch.device, shape: tuple[int, ...], precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
        """The module the engine calls in ``precision`` (:class:`~crt_bench.certify.prepare.PreparedModels`)."""
        return self._models.get(self.base_classifier, device, shape, precision)

    def _choose_batch(self, model: Callable, images: torch.Tensor, fmt: torch.memory_format) -> int:
        device = images.device
        if device.type != "cuda":
            return CPU_AUTO_BATCH
        precision = self._chosen or "fp32"
        key = (self._models.key, tuple(images.shape[1:]), precision, str(fmt))
        if key not in self._auto_batch:
            self._auto_batch[key] = cuda_batch_from_memory(self.base_classifier if self.compile else model, images,
                                                           fmt, forward_context(precision, device, casts=False))
        return self._auto_batch[key]

    def _shrink_batch(self, images: torch.Tensor, b: int) -> int:
        torch.cuda.empty_cache()
        smaller = max(8, b // 2)
        self._auto_batch.update({k: smaller for k in self._auto_batch if k[1] == tuple(images.shape[1:])})
        return smaller


def batch_kwargs(batch_size: int | None) -> dict[str, int]:
    return {} if batch_size is None else {"batch_size": batch_size}
