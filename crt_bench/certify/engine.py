"""The sampling engine under :class:`~crt_bench.certify.smooth.Smooth`: noisy copies in, votes counted.

None of its options changes the statistics: every noisy copy has its own fresh float32 Gaussian draw,
independent of every other copy's; only how the copies are packed and evaluated differs.

* the noise is drawn in place into a float32 buffer on the image's device (no ``repeat`` copies of the
  image) and the image is added by broadcasting (:mod:`crt_bench.certify.stream`);
* a sampling call fills each forward batch with noisy copies of several images (and of an image's
  selection and estimation samples) and counts per (segment, class) with a scatter-add over
  ``segment * num_classes + class``; counts stay on the device until the end;
* ``torch.inference_mode``; ``precision`` ``bf16`` / ``fp16`` autocasts the base classifier's forward
  only (``NOISE_DTYPE``); a compiled bf16 forward instead runs the engine's private folded copy with
  bf16 weights, the float32 noisy batch cast at its input; ``tf32`` is the float32 forward with TF32 on
  (Ampere+ GPUs), every other precision runs with TF32 off, set only while the engine samples
  (:mod:`crt_bench.core.tf32`); ``fastest`` times one forward batch in fp32 and in bf16 (compiled
  when ``compile``) before the first sampling (in ``warm_up`` where called) and keeps bf16 only where
  it is faster; ``precision`` is then the precision chosen, and the choice is logged;
* ``compile=True``: ``torch.compile(dynamic=False)`` with inductor freezing (weights become constants;
  a compile option, torch's global config is untouched): one static graph, at the full batch size
  (a shorter last batch is padded to it), which ``warm_up`` compiles before timed work;
* ``fold_batchnorm`` (default on): eval-mode batch norms (``BatchNorm2d``, timm's ``BatchNormAct2d``)
  that directly follow a ``Conv2d`` are folded into it in a private ``torch.fx`` copy of the model
  (checked against the model on a probe batch; the model as given is used when it cannot be traced or
  nothing can be folded; see :func:`crt_bench.models.bn_fold.fold_batchnorm`).  The copy is rebuilt
  when the model's parameters or buffers change in place (:mod:`crt_bench.certify.prepare`);
* ``channels_last`` (``None`` = automatic: on CUDA for models with a ``Conv2d``, and whenever the engine
  has its own folded copy, which is then stored NHWC too) makes the noisy batches NHWC;
* ``cpu_workers`` (CPU only; ``None`` = automatic: ``torch.get_num_threads()`` workers for models with a
  ``Conv2d``, else 1): forward passes run in that many threads with one intra-op thread each
  (``torch.set_num_threads(1)`` for the duration of the call and of the warm-up, restored after; a
  compiled model's kernels are then generated single-threaded), so the base classifier must tolerate
  being called from several threads at once (any module in eval mode without Python-side state does);
  pass ``cpu_workers=1`` otherwise;
* ``early_stop`` (default on, with keyed noise): CERTIFY stops drawing an image's estimation samples
  once its row must be ABSTAIN whatever they show (:mod:`crt_bench.certify.early_stop`); the rows are
  those of a run without stopping (``Smooth.certify_counts`` returns each row's counts too, stopped
  images' partial ones included: ``n_counted < n``);
* ``batch_size=None`` picks the batch size: from free memory on CUDA (probe forward pass of 64 zeros),
  else ``CPU_AUTO_BATCH``.  A given batch size is used as given.
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
from crt_bench.certify.precision import uses_tf32
from crt_bench.certify.prepare import PreparedModels, candidates, fastest_precision, forward_context, time_forwards
from crt_bench.certify.stream import SampleStream, as_nchw, check_image, sample_storage
from crt_bench.config.choices import NOISE_DTYPE, Precision, check_precision
from crt_bench.core.checks import check_sigma
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.provenance import synchronize
from crt_bench.core.tf32 import check_tf32, in_force_under, tf32_mode

log = logging.getLogger(__name__)

Outcome = Callable[[torch.Tensor], torch.Tensor]
"""What a sampling call counts of the model's output for a batch: one vote (a bin index) per noisy copy."""


class SamplingEngine:
    """The base classifier's votes on noisy copies of images, counted (options: the module docstring)."""

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

    def auto_batch_size(self, image: torch.Tensor) -> int:
        """The batch size ``batch_size=None`` resolves to for images like ``image`` ``[C, H, W]`` on its device."""
        check_image(image)
        images = image.unsqueeze(0).to(dtype=torch.float32)
        with self._tf32(image.device):
            self.base_classifier.eval()
            model = self._models.get(self.base_classifier, image.device, tuple(image.shape), self._chosen or "fp32")
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
            model = self._models.get(self.base_classifier, device, shape, self.precision)
            fmt = self._format(device, images)
            try:
                with torch.inference_mode(), self._threads(device):  # as the sampling's batches: inference tensors
                    for b in [max(batch_sizes)] if self.compile and batch_sizes else batch_sizes:  # padded
                        zeros = as_nchw(sample_storage(int(b), shape, fmt, device).zero_(), fmt)
                        self._forward(model, lambda out: out, zeros)
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

    def _count(self, images: torch.Tensor, segments: list[tuple[int, int]], batch_size: int | None,
               seeds: list[int] | None, outcome: Outcome, bins: int,
               stop: Callable[[SampleStream], Callable[[], None]] | None = None) -> np.ndarray:
        """Votes ``[len(segments), bins]``: segment ``(i, num)`` is ``num`` noisy copies of ``images[i]``, each
        copy's vote ``outcome(model(noisy copies))``.

        The segments are laid end to end in one stream of noisy samples, cut into forward batches of ``b``;
        one CPU worker runs them in turn in this thread, several run whole batches each in a thread pool (the
        noise still drawn in order in this thread, so a generator gives reproducible counts).  ``stop(stream)``
        (optional) gives a check run after each counted batch that may cut segments short.
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
            model = self._models.get(self.base_classifier, device, tuple(images.shape[1:]), self.precision)
            fmt = self._format(device, images)
            b = self.last_batch_size = self._choose_batch(model, images, fmt) if auto else int(batch_size)
            stream = SampleStream(images, segments, bins, self.sigma, self.generator, fmt, seeds)
            check = stop(stream) if stop is not None else None
            workers = min(self._workers(device), math.ceil(stream.total / b))  # before _threads sets 1 thread
            with torch.inference_mode(), self._threads(device):
                if workers == 1:
                    buffer = stream.buffer(b)  # reused: the noise is drawn into it in place, batch after batch
                    while not stream.done:
                        noisy, m, where = stream.next_batch(buffer, b, whole=self.compile)
                        try:
                            votes = self._forward(model, outcome, noisy, m)
                        except torch.cuda.OutOfMemoryError:
                            if not auto or b <= 8:
                                raise
                            # discard this batch (its noise too: whether a batch fits does not depend on its votes)
                            stream.rewind(where)
                            b = self.last_batch_size = self._shrink_batch(stream.images, b)
                            buffer = stream.buffer(b)
                            continue
                        stream.count(votes, where)
                        if check is not None:
                            check()
                else:  # small batches on one core each stay in its cache and need no synchronisation between cores
                    pending: deque = deque()
                    full = min(b, stream.total)
                    with ThreadPoolExecutor(workers, thread_name_prefix="crt-certify") as pool:
                        try:
                            while not stream.done or pending:
                                while not stream.done and len(pending) < 2 * workers:
                                    buffer = sample_storage(full, tuple(images.shape[1:]), fmt, device)
                                    noisy, m, where = stream.next_batch(buffer, b, whole=self.compile)
                                    pending.append((pool.submit(self._forward, model, outcome, noisy, m), where))
                                future, where = pending.popleft()
                                stream.count(future.result(), where)
                                if check is not None:
                                    check()
                        finally:
                            for future, _ in pending:
                                future.cancel()
            self.last_samples, self.last_counted = stream.total, stream.counted.copy()
        return stream.counts.view(len(segments), bins).cpu().numpy()

    def _forward(self, model: Callable[[torch.Tensor], torch.Tensor], outcome: Outcome, noisy: torch.Tensor,
                 m: int | None = None) -> torch.Tensor:
        """``outcome`` of the model's output for the first ``m`` rows (default: all); autocast covers this forward
        pass only.  A compiled model always gets the whole buffer (one static shape)."""
        with torch.inference_mode(), forward_context(self.precision, noisy.device, self._models.casts(self.precision)):
            out = model(noisy)
        return outcome(out if m is None else out[:m])

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
        models = {p: self._models.get(self.base_classifier, device, shape, p) for p in candidates(device)}
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
        engine has its own (folded, NHWC) copy of the model.  Call after ``self._models.get``."""
        if images.dim() != 4:
            return torch.contiguous_format
        if self.channels_last is not None:
            nhwc = bool(self.channels_last)
        elif self._models.folded:
            nhwc = True
        else:
            nhwc = device.type == "cuda" and any(isinstance(m, torch.nn.Conv2d) for m in self.base_classifier.modules())
        return torch.channels_last if nhwc else torch.contiguous_format

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
