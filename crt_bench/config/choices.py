"""Choices offered on the command line, as Enums (the CLI validates them at parse time and lists them in
``--help``): precisions, teacher precisions, input layers, executors, chain orders, registries.

The choices built from catalogues (profiles, datasets, methods, architectures) are made by the CLI from
the catalogues themselves (:mod:`crt_bench.cli.options`).
"""
from __future__ import annotations

from enum import Enum

from crt_bench.core.checks import check_choice
from crt_bench.core.errors import CrtBenchError


class Precision(str, Enum):
    """The base classifier's forward pass during certification (:data:`PRECISIONS`)."""

    FP32 = "fp32"
    TF32 = "tf32"
    BF16 = "bf16"
    FP16 = "fp16"
    FASTEST = "fastest"


class TeacherPrecision(str, Enum):
    """CRT's frozen teacher forward: ``auto`` = bf16 where the device has native bf16, else fp32."""

    AUTO = "auto"
    FP32 = "fp32"
    BF16 = "bf16"


class InputLayer(str, Enum):
    """The input layer of a reference checkpoint: normalize (Cohen, Jeong) or center (Salman)."""

    NORMALIZE = "normalize"
    CENTER = "center"


class Executor(str, Enum):
    """Where a grid's jobs run: local subprocesses, slurm, in-process through submitit (debug) or without it."""

    LOCAL = "local"
    SLURM = "slurm"
    DEBUG = "debug"
    INLINE = "inline"


class ChainOrder(str, Enum):
    """The order of a chain's links: release year of the architecture, or as given."""

    RELEASE = "release"
    GIVEN = "given"


class Registry(str, Enum):
    """What ``crt-bench list`` prints."""

    ARCHS = "archs"
    METHODS = "methods"
    PROFILES = "profiles"


def values(choices: type[Enum]) -> tuple[str, ...]:
    """The values of an Enum of choices, in definition order."""
    return tuple(member.value for member in choices)


INPUT_LAYERS = values(InputLayer)

TEACHER_PRECISIONS = values(TeacherPrecision)


def check_teacher_precision(precision: str) -> str:
    return check_choice("--teacher-precision", precision, TEACHER_PRECISIONS)

PRECISIONS = values(Precision)
"""Precisions of the base classifier's forward pass: ``fp32`` (default, IEEE: TF32 off), ``tf32`` (the
float32 forward with TF32 convolutions and matmuls, Ampere+ GPUs only), autocast to bf16 / fp16 (TF32
off for what autocast leaves in float32; see :mod:`crt_bench.core.tf32`), or ``fastest``: the engine
times one forward batch in fp32 and in bf16 before certifying and uses bf16 only where it is faster (the
rows record the precision chosen)."""

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
