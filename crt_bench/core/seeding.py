"""Seeds mixed from several integers (per image, per rank)."""
from __future__ import annotations

import hashlib
import struct


def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (blake2b): distinct tuples give unrelated generator streams."""
    packed = struct.pack(f"<{len(parts)}q", *(int(p) for p in parts))
    return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little") & (2**63 - 1)
