"""The dataset driver: which test images (``--subset``), and CERTIFY over them group by group.

:func:`iter_certify` yields the rows of each group of images as soon as it is certified, with the
:class:`EngineSettings` they were certified with, so a caller can store them as they come
(:mod:`crt_bench.certify.resumable` appends a part every few images and resumes where it stopped);
:func:`certify_dataset` collects the rows into one frame.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from crt_bench.certify.batching import forward_batch_sizes
from crt_bench.certify.smooth import Smooth, batch_kwargs
from crt_bench.certify.stats import Certificate, check_settings
from crt_bench.core.console import progress
from crt_bench.core.errors import CrtBenchError
from crt_bench.store.schema import COUNT_COLUMNS

CERTIFY_COLUMNS = ("idx", "label", "predict", "radius", "correct", "seconds", "n0", "n", "alpha", "sigma")
"""Columns of :func:`certify_dataset` output, in order, before :data:`COUNT_COLUMNS`."""

GROUP_BATCHES = 16
"""Images are certified in groups of about this many forward batches (see :func:`iter_certify`)."""

MAX_GROUP = 256


@dataclass(frozen=True)
class EngineSettings:
    """The sampling engine's settings actually used for a frame of rows (written with every row)."""

    batch_size: int
    precision: str  # the forward precision (``fastest``: the one it chose)
    noise_dtype: str
    compile: bool
    folded_batchnorms: int
    images_per_group: int
    tf32: bool  # TF32 in force in the forward passes (crt_bench.core.tf32)

    @classmethod
    def of(cls, smooth: Smooth, batch: int, group: int, device: torch.device,
           folded_batchnorms: int | None = None) -> EngineSettings:
        folded = smooth.folded_batchnorms if folded_batchnorms is None else folded_batchnorms
        return cls(int(batch), smooth.precision, smooth.noise_dtype, bool(smooth.compile), int(folded), int(group),
                   bool(smooth.tf32_in_force(device)))


def iter_certify(
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
    seed: int | None = None,
    progress: bool = True,
    precision: str = "fp32",
    compile: bool = False,
) -> Iterator[tuple[pd.DataFrame, EngineSettings]]:
    """CERTIFY ``x[i]`` for each ``i`` in ``indices``, yielding ``(rows, engine settings)`` per group of images.

    Columns (:data:`CERTIFY_COLUMNS`, then the counts behind the row,
    :data:`~crt_bench.store.schema.COUNT_COLUMNS`): ``idx`` (index into the split, not the position in the subset),
    ``label``, ``predict`` (``-1`` = abstain), ``radius`` (full precision, 0.0 on abstain), ``correct``
    (1 iff predict == label), ``seconds`` (wall time of the certification, see below), and the settings
    ``n0, n, alpha, sigma``.  Images are moved to the model's device (that of its first parameter or
    buffer; ``x``'s device for a parameter-free model) before the timer starts.

    Images are certified in groups with :meth:`Smooth.certify_many` (per-image statistics exactly those
    of :meth:`Smooth.certify`), a group being as many images as fill about 16 forward batches (one
    image when ``n0 + n`` is that large already, at most 256); ``seconds`` is the group's wall time
    divided by its number of images; before the first group an untimed :meth:`Smooth.warm_up` runs the
    model at every batch shape the groups will use (folding, compilation and cuDNN tuning stay out of
    ``seconds``; no noise is drawn, so the rows are those of a run without it).  ``seed`` gives every
    image noise keyed by (seed, its index): its
    row is then the same however the index list is split, resumed or grouped; without it the noise
    comes from ``generator`` (or torch's global RNG) in stream order.  ``batch_size=None`` lets
    :class:`Smooth` choose it; ``precision`` and ``compile`` are passed to :class:`Smooth`.  The
    :class:`EngineSettings` beside each frame are those actually used.
    """
    if x.dim() != 4 or y.dim() != 1 or len(x) != len(y):
        raise CrtBenchError(f"expected images [N, C, H, W] and labels [N], got {tuple(x.shape)} and {tuple(y.shape)}")
    bad = [i for i in indices if not 0 <= i < len(x)]
    if bad:
        raise CrtBenchError(f"image indices out of range 0..{len(x) - 1}: {bad[:5]}")
    check_settings(alpha, n0=n0, n=n, **batch_kwargs(batch_size))
    smooth = Smooth(model, num_classes, sigma, generator=generator, precision=precision, compile=compile,
                    noise_seed=seed)
    device = module_device(model, default=x.device)
    batch = batch_size if batch_size is not None else smooth.auto_batch_size(x[0].to(device))
    group = min(MAX_GROUP, max(1, math.ceil(GROUP_BATCHES * batch / (n0 + n))))
    groups = [[int(i) for i in indices[start : start + group]] for start in range(0, len(indices), group)]
    if groups:  # untimed: every forward shape of the groups below, before the first timer starts
        smooth.warm_up(x[groups[0][0]].to(device), forward_batch_sizes(map(len, groups), n0 + n, batch))

    with progress_bar(progress, len(indices), sigma) as advance:
        for chosen in groups:
            images = x[chosen].to(device)
            start = time.perf_counter()
            results = smooth.certify_counts(images, n0, n, alpha, batch, keys=chosen)
            seconds = (time.perf_counter() - start) / len(chosen)
            records = [(i, int(y[i]), c.predict, c.radius, int(c.predict == int(y[i])), seconds)
                       for i, c in zip(chosen, results)]
            yield _frame(records, n0, n, alpha, sigma, results), EngineSettings.of(smooth, batch, group, device)
            advance(len(chosen))
    if not indices:
        yield _frame([], n0, n, alpha, sigma, []), EngineSettings.of(smooth, batch, group, device)


def certify_dataset(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> pd.DataFrame:
    """All rows of :func:`iter_certify` (same arguments) in one frame."""
    frames = [frame for frame, _ in iter_certify(model, x, y, **kwargs)]
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _frame(records: list[tuple[int, int, int, float, int, float]], n0: int, n: int, alpha: float,
           sigma: float, certificates: list[Certificate]) -> pd.DataFrame:
    columns = list(zip(*records)) if records else [()] * 6
    dtypes = (np.int64, np.int64, np.int64, np.float64, np.int64, np.float64)
    frame = pd.DataFrame(
        {name: np.asarray(col, dtype=dtype) for name, col, dtype in zip(CERTIFY_COLUMNS[:6], columns, dtypes)}
    )
    frame["n0"] = np.int64(n0)
    frame["n"] = np.int64(n)
    frame["alpha"] = np.float64(alpha)
    frame["sigma"] = np.float64(sigma)
    for name in COUNT_COLUMNS:
        frame[name] = np.asarray([getattr(c, name) for c in certificates],
                                 dtype=np.float64 if name == "p_a_lower" else np.int64)
    return frame[[*CERTIFY_COLUMNS, *COUNT_COLUMNS]]


def module_device(model: torch.nn.Module, default: torch.device) -> torch.device:
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return default


@contextmanager
def progress_bar(enabled: bool, total: int, sigma: float) -> Iterator[Callable[..., None]]:
    """Yield an ``advance(steps=1)`` callable; shows a transient progress bar on stderr when ``enabled``."""
    if not enabled:
        yield lambda steps=1: None
        return
    with progress(transient=True) as bar:
        task = bar.add_task(f"certify sigma={sigma:g}", total=total)
        yield lambda steps=1: bar.advance(task, steps)
