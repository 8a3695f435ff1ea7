"""TF32: the one place that reads, sets and checks whether float32 convolutions and matmuls run in TF32.

On NVIDIA Ampere and newer GPUs (compute capability >= 8.0) cuDNN and cuBLAS can run float32
convolutions and matrix products in TF32 (10-bit mantissa inputs, float32 accumulation): several times
faster, but no longer IEEE float32. PyTorch's default is TF32 *on* for cuDNN convolutions and off for
matmuls, so an unqualified "fp32" figure on such a GPU is a TF32 figure for a convolutional network.

**Policy.** crt-bench turns TF32 *off* unless it is asked for, so that an fp32 row is IEEE float32:

* training (``crt-bench run``, timing probes, ``benchmarks/bench_train.py``): off by default;
  ``crt-bench run --tf32`` / ``EngineOptions(tf32=True)`` runs the training step with TF32 on. The bf16
  autocast of CUDA training covers the convolutions either way; TF32 affects the float32 ops it leaves.
* certification: precision ``fp32`` (and ``bf16`` / ``fp16``) runs with TF32 off; precision ``tf32``
  (``crt-bench certify --precision tf32``, ``Smooth(precision="tf32")``) is the float32 forward with TF32
  on, set only while the engine samples and restored afterwards.
* the batch-norm folding check (:func:`crt_bench.models.bn_fold.fold_batchnorm`) always compares in
  IEEE float32: TF32 rounding alone exceeds its tolerance for ResNet-20/110.
* the state in force is recorded with every row (``tf32`` column of the runs, certify, certifications
  and timing tables) and shown in the report's device column (:func:`device_label`).

Asking for TF32 on a device that cannot honour it (a CPU, or a GPU before compute capability 8.0) is a
:class:`~crt_bench.core.errors.CrtBenchError` (:func:`check_tf32`), before any work.

**Two APIs, never mixed.** torch >= 2.9 has ``torch.backends.cuda.matmul.fp32_precision`` and
``torch.backends.cudnn.conv.fp32_precision`` (``"ieee"`` / ``"tf32"``; ``"none"`` inherits from the
backend, then from ``torch.backends.fp32_precision``); older releases have only
``torch.backends.cuda.matmul.allow_tf32`` and ``torch.backends.cudnn.allow_tf32``. torch raises when the
legacy flags are read after the new ones were set differently, so this module picks one API by
feature detection (:func:`uses_precision_api`) and touches only that one.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from crt_bench.core.errors import CrtBenchError

MIN_CAPABILITY = (8, 0)
"""CUDA compute capability from which the hardware computes TF32 (Ampere)."""


@dataclass(frozen=True)
class TF32State:
    """Whether float32 matmuls (cuBLAS) and convolutions (cuDNN) may run in TF32."""

    matmul: bool
    conv: bool

    @property
    def any(self) -> bool:
        return self.matmul or self.conv


def uses_precision_api() -> bool:
    """torch >= 2.9: the ``fp32_precision`` settings exist (and the legacy ``allow_tf32`` must not be used)."""
    conv = getattr(torch.backends.cudnn, "conv", None)
    return hasattr(torch.backends.cuda.matmul, "fp32_precision") and hasattr(conv, "fp32_precision")


def _resolved(*levels: str) -> bool:
    """The first setting that is not ``"none"`` (op, then backend, then generic) decides; all none: IEEE."""
    for value in levels:
        if value != "none":
            return value == "tf32"
    return False


def read() -> TF32State:
    """The process's current TF32 setting of CUDA float32 matmuls and convolutions."""
    backends = torch.backends
    if uses_precision_api():
        generic = str(getattr(backends, "fp32_precision", "none"))
        cuda = str(getattr(backends.cudnn, "fp32_precision", "none"))
        return TF32State(matmul=_resolved(str(backends.cuda.matmul.fp32_precision), cuda, generic),
                         conv=_resolved(str(backends.cudnn.conv.fp32_precision), cuda, generic))
    return TF32State(matmul=bool(backends.cuda.matmul.allow_tf32), conv=bool(backends.cudnn.allow_tf32))


def _raw() -> tuple:
    """The settings exactly as stored (``"none"`` included), to put back unchanged."""
    backends = torch.backends
    if uses_precision_api():
        return (backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision)
    return (backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32)


def _set_raw(matmul: object, conv: object) -> None:
    backends = torch.backends
    if uses_precision_api():
        backends.cuda.matmul.fp32_precision = matmul
        backends.cudnn.conv.fp32_precision = conv
    else:
        backends.cuda.matmul.allow_tf32 = matmul
        backends.cudnn.allow_tf32 = conv


@contextmanager
def tf32_mode(enabled: bool) -> Iterator[None]:
    """TF32 on (``enabled``) or off for both CUDA float32 matmuls and convolutions; restored on exit.

    Only the settings change (no device is touched), so this works, and is cheap, on any machine.
    """
    saved = _raw()
    if uses_precision_api():
        _set_raw("tf32" if enabled else "ieee", "tf32" if enabled else "ieee")
    else:
        _set_raw(bool(enabled), bool(enabled))
    try:
        yield
    finally:
        _set_raw(*saved)


def supports_tf32(device: torch.device) -> bool:
    """Whether ``device`` computes TF32: a CUDA GPU of compute capability 8.0 or newer."""
    device = torch.device(device)
    if device.type != "cuda":
        return False
    return tuple(torch.cuda.get_device_capability(device)) >= MIN_CAPABILITY


def check_tf32(enabled: bool, device: torch.device | str, what: str = "TF32") -> None:
    """Raise :class:`CrtBenchError` when TF32 is asked for (``enabled``) on a device that cannot honour it."""
    if not enabled:
        return
    device = torch.device(device)
    if device.type != "cuda":
        raise CrtBenchError(f"{what} needs an NVIDIA GPU of compute capability 8.0 or newer (Ampere+), but the "
                            f"device is {device.type}, where float32 is IEEE float32 anyway")
    if not supports_tf32(device):
        major, minor = torch.cuda.get_device_capability(device)
        raise CrtBenchError(f"{what} needs an NVIDIA GPU of compute capability 8.0 or newer (Ampere+), but "
                            f"{torch.cuda.get_device_name(device)} has compute capability {major}.{minor}")


def in_force(device: torch.device | str) -> bool:
    """Whether float32 CUDA work on ``device`` runs in TF32 now (the current setting and the hardware)."""
    device = torch.device(device)
    return device.type == "cuda" and read().any and supports_tf32(device)


def in_force_under(enabled: bool, device: torch.device | str) -> bool:
    """What :func:`in_force` reads inside ``tf32_mode(enabled)``: the state a row records."""
    with tf32_mode(enabled):
        return in_force(device)


def device_label(device: str, tf32: object) -> str:
    """``"NVIDIA H200 (tf32 off)"``: the report's device column for a GPU row that records its TF32 state.

    CPU rows, and rows written before the ``tf32`` column existed (missing / NaN), keep the bare device.
    """
    text = "" if device is None else str(device)
    if not text or text.startswith("cpu") or _missing(tf32):
        return text
    return f"{text} (tf32 {'on' if bool(tf32) else 'off'})"


def device_labels(rows) -> list[str]:
    """:func:`device_label` of each row of a table with a ``device`` (and maybe a ``tf32``) column."""
    states = rows["tf32"] if "tf32" in rows else [None] * len(rows)
    return [device_label(device, tf32) for device, tf32 in zip(rows["device"], states)]


def _missing(value: object) -> bool:
    """None, NaN or pandas' NA: what an old row's absent ``tf32`` reads as."""
    if value is None:
        return True
    try:
        return bool(value != value)  # only NaN differs from itself
    except (TypeError, ValueError):  # pd.NA has no truth value
        return True
