"""Per-image yes/no outcomes as a compact text column: the bits packed big-endian, written as hex.

The ``epochs`` table keeps each evaluation's per-image correctness this way (``noisy_test_correct`` with
its length in ``noisy_test_images``), so that intervals can pair models over the same images.
"""
from __future__ import annotations

import numpy as np

from crt_bench.core.errors import CrtBenchError


def pack_bits(values) -> str:
    """``values`` (booleans) as hex text of their packed bits."""
    return np.packbits(np.asarray(values, dtype=bool)).tobytes().hex()


def unpack_bits(text: str, count: int) -> np.ndarray:
    """The ``count`` booleans :func:`pack_bits` wrote as ``text``."""
    try:
        raw = np.frombuffer(bytes.fromhex(text), dtype=np.uint8)
    except (TypeError, ValueError):
        raise CrtBenchError(f"per-image outcomes are not packed hex bits: {str(text)[:20]!r}...") from None
    if count < 0 or len(raw) != (count + 7) // 8:
        raise CrtBenchError(f"per-image outcomes hold {len(raw) * 8} bits, not the {count} images recorded")
    return np.unpackbits(raw, count=count).astype(bool)


__all__ = ["pack_bits", "unpack_bits"]
