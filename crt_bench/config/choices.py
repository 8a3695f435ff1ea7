"""Choices offered on the command line: precisions, teacher precisions, input layers."""
from __future__ import annotations

from crt_bench.core.checks import check_choice

INPUT_LAYERS = ("normalize", "center")

TEACHER_PRECISIONS = ("auto", "fp32", "bf16")


def check_teacher_precision(precision: str) -> str:
    return check_choice("--teacher-precision", precision, TEACHER_PRECISIONS)

PRECISIONS = ("fp32", "tf32", "bf16", "fp16")
"""Precisions of the base classifier's forward pass: ``fp32`` (default, IEEE: TF32 off), ``tf32`` (the
float32 forward with TF32 convolutions and matmuls, Ampere+ GPUs only) or autocast to bf16 / fp16 (TF32
off for what autocast leaves in float32); see :mod:`crt_bench.core.tf32`."""

NOISE_DTYPE = "float32"
"""dtype of the Gaussian noise and of the noisy input, whatever the precision.

Randomized smoothing is unsound when the noise itself is sampled in low precision (Voracek & Hein,
ICLR 2023), so the noise is always drawn in float32 and added to the float32 image; only the base
classifier's forward runs under autocast.  The certificate is then a statement about the smoothed
version of the (deterministic) reduced-precision base classifier, which is what is evaluated.
"""


def check_precision(precision: str) -> str:
    """Return ``precision`` normalised (one of :data:`PRECISIONS`) or raise CrtBenchError."""
    return check_choice("precision", str(precision).strip().lower(), PRECISIONS,
                        hint=f" (the noise is always sampled in {NOISE_DTYPE}; bf16/fp16 only autocast the base "
                             "classifier)")
