"""The noisy samples of one sampling call: segments laid end to end, cut into forward batches, counted.

A *segment* is ``num`` noisy copies of one image (CERTIFY has two per image: selection and
estimation).  Segments of several images share forward batches; only the packing is shared, every
copy has its own float32 Gaussian draw.

Noise comes from one of two sources:

* a ``torch.Generator`` (or the global RNG): draws follow the order of the stream, so the noise of an
  image depends on what was certified before it in the same call;
* *keyed* noise (``segment_seeds``): every segment has its own 64-bit seed, and its noise is cut into
  chunks of :data:`NOISE_CHUNK` copies, chunk ``c`` drawn from a generator seeded with
  ``hash(segment seed, c)``.  A copy's noise then depends only on (seed, image, segment, position),
  never on batch boundaries, on which images share the call, or on where a certification was
  interrupted: a resumed or sharded certification equals an uninterrupted one row for row.  Torch's
  samplers give the same values for a whole chunk whether it is drawn into a fresh tensor or straight
  into the batch (same element count, contiguous), so whole chunks go straight into the batch and only
  chunks cut by a batch boundary are drawn once and cached.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from crt_bench.core.errors import CrtBenchError
from crt_bench.core.seeding import mix_seed

NOISE_CHUNK = 256
"""Noisy copies per independently seeded chunk of keyed noise (3 MB of float32 CIFAR images)."""


def sample_storage(m: int, image_shape: tuple[int, ...], fmt: torch.memory_format,
                   device: torch.device) -> torch.Tensor:
    """Storage for ``m`` noisy samples: ``[m, C, H, W]``, or ``[m, H, W, C]`` for channels-last.

    The noise is drawn into the storage as a contiguous tensor: ``normal_`` on a channels-last
    strided tensor takes a slow element-wise path (about 9x slower on a CPU).
    """
    shape = tuple(image_shape)
    if fmt == torch.channels_last:
        shape = (*shape[1:], shape[0])
    return torch.empty((m, *shape), dtype=torch.float32, device=device)


def as_nchw(raw: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """The batch the model sees: an NCHW view of :func:`sample_storage` rows (channels-last strides or not)."""
    return raw.permute(0, 3, 1, 2) if fmt == torch.channels_last else raw


class SampleStream:
    """Counts ``[len(segments) * num_classes]`` of ``argmax f(image + noise)``, batch by batch."""

    def __init__(self, images: torch.Tensor, segments: list[tuple[int, int]], num_classes: int, sigma: float,
                 generator: torch.Generator | None, fmt: torch.memory_format,
                 segment_seeds: list[int] | None = None) -> None:
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
        self.counted = np.zeros(len(segments), dtype=np.int64)  # samples of each segment counted so far
        self._ones: torch.Tensor | None = None
        self.segment_seeds = segment_seeds
        self._keyed = torch.Generator(device=device) if segment_seeds is not None else None
        self._cached: tuple[int, int, torch.Tensor] | None = None  # (segment, chunk, noise) cut by a batch

    @property
    def done(self) -> bool:
        return self.position >= self.total

    def buffer(self, b: int) -> torch.Tensor:
        """Storage for up to ``b`` noisy samples (:func:`sample_storage`)."""
        m = min(b, self.total - self.position)
        return sample_storage(m, tuple(self.images.shape[1:]), self.fmt, self.images.device)

    def next_batch(self, buffer: torch.Tensor, b: int, whole: bool = False) -> tuple[torch.Tensor, int | None, tuple]:
        """``(noisy, m, where)``: the next ``<= b`` noisy samples (fresh float32 noise drawn in place into
        ``buffer``), where :meth:`count` puts their votes.  ``whole`` (a compiled model: one static shape) hands
        out the whole buffer of a short batch, its first ``m`` rows the samples (``m`` None otherwise)."""
        position = self.position
        m = min(b, self.total - position, len(buffer))
        raw = buffer[:m]
        if self.segment_seeds is None:
            raw.normal_(0.0, self.sigma, generator=self.generator)
        noisy = as_nchw(raw, self.fmt)
        while self.ends[self.first] <= position:
            self.first += 1
        pieces = []  # (segment, lo, hi): the batch rows holding that segment's samples
        segment = self.first
        while True:  # add each image to its slice of the batch (broadcast, no copies)
            lo = max(int(self.starts[segment]), position) - position
            hi = min(int(self.ends[segment]), position + m) - position
            if self.segment_seeds is not None:
                offset = position + lo - int(self.starts[segment])
                self._keyed_noise(segment, offset, offset + hi - lo, raw[lo:hi])
            noisy[lo:hi].add_(self.images[self.segments[segment][0]])
            pieces.append((segment, lo, hi))
            if self.ends[segment] >= position + m:
                break
            segment += 1
        self.position += m
        if whole and m < len(buffer):
            return as_nchw(buffer, self.fmt), m, (position, m, pieces)
        return noisy, None, (position, m, pieces)

    def _keyed_noise(self, segment: int, a: int, b: int, out: torch.Tensor) -> None:
        """Noise of copies ``a..b-1`` of ``segment`` into ``out`` (rows of the batch buffer)."""
        assert self._keyed is not None and self.segment_seeds is not None
        num, seed = self.segments[segment][1], self.segment_seeds[segment]
        start = a
        while a < b:
            chunk = a // NOISE_CHUNK
            c_lo, c_hi = chunk * NOISE_CHUNK, min((chunk + 1) * NOISE_CHUNK, num)
            take = min(b, c_hi)
            rows = out[a - start: take - start]
            if a == c_lo and take == c_hi:  # the whole chunk: draw it straight into the batch
                rows.normal_(0.0, self.sigma, generator=self._keyed.manual_seed(mix_seed(seed, chunk)))
            else:
                if self._cached is None or self._cached[:2] != (segment, chunk):
                    noise = torch.empty((c_hi - c_lo, *out.shape[1:]), dtype=out.dtype, device=out.device)
                    noise.normal_(0.0, self.sigma, generator=self._keyed.manual_seed(mix_seed(seed, chunk)))
                    self._cached = (segment, chunk, noise)
                rows.copy_(self._cached[2][a - c_lo: take - c_lo])
            a = take

    def truncate(self, segment: int) -> None:
        """Draw no more samples of ``segment`` (those already handed out in batches stay).

        The later segments move up in the stream; keyed noise depends on a sample's place in its own
        segment only (chunks of the segment's full size), so their noise is unchanged.
        """
        cut = int(self.ends[segment]) - max(self.position, int(self.starts[segment]))
        if cut <= 0:
            return
        self.ends[segment:] -= cut
        self.starts[segment + 1:] -= cut
        self.total -= cut

    def rewind(self, where: tuple) -> None:
        self.position = where[0]

    def count(self, predictions: torch.Tensor, where: tuple[int, int, list[tuple[int, int, int]]]) -> None:
        """Add the votes of one batch: ``counts[segment * num_classes + class] += 1`` per sample.

        A scatter-add (``index_add_``) rather than ``bincount``, which synchronises with a GPU.
        """
        _, m, pieces = where
        bins = predictions.clone() if len(pieces) > 1 or pieces[0][0] else predictions
        for segment, lo, hi in pieces:
            self.counted[segment] += hi - lo
            if segment:
                bins[lo:hi] += segment * self.c
        if self._ones is None or len(self._ones) < m:
            self._ones = torch.ones(m, dtype=torch.long, device=predictions.device)
        self.counts.index_add_(0, bins, self._ones[:m])


def check_image(x: torch.Tensor) -> None:
    """One image ``[C, H, W]``, or CrtBenchError."""
    if x.dim() != 3:
        raise CrtBenchError(f"certify/predict take one image [C, H, W], got shape {tuple(x.shape)}")


def stack_images(images: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
    """``[K, C, H, W]`` from a batch or a list of images (K >= 1), or CrtBenchError."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 4:
            raise CrtBenchError(f"expected images [K, C, H, W], got shape {tuple(images.shape)}")
        stack = images
    else:
        images = list(images)
        for image in images:
            check_image(image)
        if not images:
            raise CrtBenchError("no images given")
        stack = torch.stack(images)
    if stack.shape[0] < 1:
        raise CrtBenchError("no images given")
    return stack
