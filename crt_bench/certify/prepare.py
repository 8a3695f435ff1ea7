"""The module the sampling engine calls: folded, channels-last, cast, compiled; and the ``fastest`` precision.

* :func:`prepare_model`: BatchNorm folding into a private ``torch.fx`` copy (stored NHWC), for a compiled
  bf16 forward that copy's weights cast to bfloat16 with the float32 noisy batch cast at its input
  (:class:`CastInput`; the noise itself stays float32), and ``torch.compile(dynamic=False)`` with
  inductor's *freezing* (weights folded into the graph as constants; passed as a compile option, so
  torch's global inductor config is untouched);
* :func:`time_forwards`: the seconds of one forward batch, best of a few, for :func:`fastest_precision`,
  which picks bf16 only where it is measured faster than fp32.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import torch

from crt_bench.certify.precision import autocast
from crt_bench.core.provenance import synchronize
from crt_bench.models.bn_fold import fold_batchnorm

FASTEST_CANDIDATES = ("fp32", "bf16")
"""What precision ``fastest`` chooses between (fp32: IEEE, TF32 off)."""

COMPILE_OPTIONS = {"freezing": True}
"""Inductor options of the engine's ``torch.compile``: freezing makes weights constants (inference only)."""


class CastInput(torch.nn.Module):
    """``model(x.to(dtype))``: a low-precision copy of the model fed the float32 noisy batch."""

    def __init__(self, model: torch.nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype))


def prepare_model(base: torch.nn.Module, shape: tuple[int, ...], precision: str, *, compile: bool, fold: bool,
                  channels_last: bool | None) -> tuple[Callable[[torch.Tensor], torch.Tensor], int, bool]:
    """``(model, folded BatchNorms, casts its own input)`` for noisy batches of images of ``shape``.

    The third value is True when the model runs in ``precision`` by itself (bf16 weights of the private
    copy, compiled) and needs no autocast around it.
    """
    model: torch.nn.Module = base
    folded = 0
    if fold:
        copy, count = fold_batchnorm(base, shape)
        if copy is not None:
            model, folded = copy, count
            if channels_last is not False:
                model = model.to(memory_format=torch.channels_last)  # our copy only
    cast = bool(compile and folded and precision == "bf16")
    if cast:  # our private copy: bf16 weights, the float32 noisy batch cast at the input (inside the graph)
        model = CastInput(model.to(torch.bfloat16), torch.bfloat16)
    if compile:
        model = torch.compile(model, dynamic=False, options=dict(COMPILE_OPTIONS))  # static: one graph per shape
    return model, folded, cast


class PreparedModels:
    """The engine's models (:func:`prepare_model`) of one base classifier, one per precision; rebuilt when
    the base classifier's parameters or buffers are replaced or changed in place."""

    def __init__(self, *, compile: bool, fold: bool, channels_last: bool | None) -> None:
        self.compile, self.fold, self.channels_last = compile, fold, channels_last
        self.key: tuple | None = None
        self.models: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], int, bool]] = {}
        self.folded = 0
        """BatchNorms folded in the latest model handed out (0: the base classifier is used as given)."""

    def get(self, base: torch.nn.Module, device: torch.device, shape: tuple[int, ...],
            precision: str) -> Callable[[torch.Tensor], torch.Tensor]:
        tensors = (*base.parameters(), *base.buffers())
        key = (id(base), str(device), shape, tuple((id(t), _version(t), t.device) for t in tensors))
        if self.key != key:
            self.models, self.key = {}, key
        if precision not in self.models:
            self.models[precision] = prepare_model(base, shape, precision, compile=self.compile, fold=self.fold,
                                                   channels_last=self.channels_last)
        model, self.folded, _ = self.models[precision]
        return model

    def casts(self, precision: str) -> bool:
        """Whether the model of ``precision`` casts its own input (no autocast around it)."""
        return self.models[precision][2]


def _version(tensor: torch.Tensor) -> int:
    """In-place modification counter (inference tensors have none and cannot be modified outside it)."""
    try:
        return tensor._version
    except RuntimeError:
        return -1


def time_forwards(models: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], AbstractContextManager]],
                  batch: torch.Tensor, reps: int = 5) -> dict[str, float]:
    """Best-of-``reps`` seconds of ``model(batch)`` under its context (re-entrant) for each named model, the
    models taking turns (a load change on a shared machine hits all alike), after one untimed call each."""
    best = {name: float("inf") for name in models}
    with torch.inference_mode():
        for rep in range(reps + 1):
            for name, (model, context) in models.items():
                start = time.perf_counter()
                with context:
                    model(batch)
                synchronize(batch.device)
                if rep:
                    best[name] = min(best[name], time.perf_counter() - start)
    return best


def fastest_precision(timings: dict[str, float]) -> str:
    """bf16 only where measured faster than fp32; the first of :data:`FASTEST_CANDIDATES` otherwise."""
    return min(FASTEST_CANDIDATES, key=lambda p: (timings.get(p, float("inf")), FASTEST_CANDIDATES.index(p)))


def candidates(device: torch.device) -> Sequence[str]:
    """The precisions ``fastest`` times on ``device`` (bf16 only where torch supports it there)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return FASTEST_CANDIDATES[:1]
    return FASTEST_CANDIDATES


def forward_context(precision: str, device: torch.device, casts: bool) -> AbstractContextManager:
    """Autocast for ``precision`` unless the prepared model casts its own input."""
    return autocast("fp32" if casts else precision, device)
