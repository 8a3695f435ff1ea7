"""Whether a device computes bf16 natively: the one place that decides where bf16 autocast pays.

On CUDA: Ampere or newer (``torch.cuda.is_bf16_supported(including_emulation=False)``; torch >= 2.4
says True on a T4 or V100 by default, where bf16 is emulated). On a CPU: the ``avx512_bf16`` or
``amx_bf16`` flags of ``/proc/cpuinfo`` (x86 instructions that multiply bf16). torch's own CPU checks
do not separate them from emulation: ``torch.backends.cpu.get_cpu_capability()`` reads ``AVX512`` on
CPUs with and without AVX512-BF16, and ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` is True on any
AVX512 CPU, where oneDNN emulates bf16 with float32 arithmetic (slower than float32 itself).
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_flags(text: str) -> frozenset[str]:
    """The feature flags of the first ``flags`` line of a ``/proc/cpuinfo`` text (empty if none)."""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return frozenset(value.split())
    return frozenset()


def flags_compute_bf16(flags: frozenset[str]) -> bool:
    return any(flag in flags for flag in NATIVE_BF16_CPU_FLAGS)


@lru_cache(maxsize=1)
def cpu_native_bf16() -> bool:
    """Whether this machine's CPU has bf16 arithmetic instructions (False where /proc/cpuinfo is absent)."""
    try:
        text = CPUINFO.read_text()
    except OSError:
        return False
    return flags_compute_bf16(cpu_flags(text))


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 convolutions and matmuls natively (CUDA Ampere+, AVX512-BF16/AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return cpu_native_bf16()
    return False
