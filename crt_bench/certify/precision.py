"""Precision of the base classifier's forward pass; the noise is float32 whatever is chosen."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from crt_bench.errors import CrtBenchError

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
"""Precisions of the base classifier's forward pass: ``fp32`` (default, IEEE: TF32 off), ``tf32`` (the
float32 forward with TF32 convolutions and matmuls, Ampere+ GPUs only) or autocast to bf16 / fp16 (TF32
off for what autocast leaves in float32); see :mod:`crt_bench.tf32`."""

NOISE_DTYPE = "float32"
"""dtype of the Gaussian noise and of the noisy input, whatever the precision.

Randomized smoothing is unsound when the noise itself is sampled in low precision (Voracek & Hein,
ICLR 2023), so the noise is always drawn in float32 and added to the float32 image; only the base
classifier's forward runs under autocast.  The certificate is then a statement about the smoothed
version of the (deterministic) reduced-precision base classifier, which is what is evaluated.
"""

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str) -> str:
    """Return ``precision`` normalised (one of :data:`PRECISIONS`) or raise CrtBenchError."""
    key = str(precision).strip().lower()
    if key not in PRECISIONS:
        raise CrtBenchError(
            f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)} "
            f"(the noise is always sampled in {NOISE_DTYPE}; bf16/fp16 only autocast the base classifier)"
        )
    return key


def uses_tf32(precision: str) -> bool:
    """Whether ``precision`` runs with TF32 on (only ``tf32``; every other precision runs with it off)."""
    return precision == "tf32"


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (a no-op for ``fp32`` and ``tf32``)."""
    if precision not in AUTOCAST_DTYPES:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])
