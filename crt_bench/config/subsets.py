"""Subset syntax of the test split (``all``, ``first:N``, ``range:A:B``, ``every:K``)."""
from __future__ import annotations

import re

from crt_bench.core.errors import CrtBenchError

_SUBSET_FORMS = (
    "'all', 'skip:K' (images 0, K, 2K, ...; a bare integer 'K' means the same), "
    "'range:A:B' (images A..B-1) or 'range:A:B:K' (every K-th image of A..B-1)"
)


def parse_subset(spec: str, size: int) -> list[int]:
    """Indices into a dataset split of ``size`` images selected by ``spec``.

    ``"all"``; ``"skip:K"`` or ``"K"`` = every K-th image from 0 (Cohen's ``--skip 20`` -> 0, 20, ...,
    500 CIFAR-10 test images); ``"range:A:B"`` = images A..B-1 (MACER reports ``range:500:1000``);
    ``"range:A:B:K"`` = every K-th image of A..B-1.
    """
    text = str(spec).strip().lower()
    if size < 1:
        raise CrtBenchError(f"cannot select images from an empty split (size {size})")

    def bad(why: str) -> CrtBenchError:
        return CrtBenchError(f"bad subset {spec!r}: {why}; accepted forms: {_SUBSET_FORMS}")

    if text == "all":
        return list(range(size))
    if re.fullmatch(r"\d+", text):
        text = f"skip:{text}"
    match = re.fullmatch(r"skip:(\d+)", text)
    if match:
        step = int(match.group(1))
        if step < 1:
            raise bad("K must be at least 1")
        return list(range(0, size, step))
    match = re.fullmatch(r"range:(\d+):(\d+)(?::(\d+))?", text)
    if match:
        start, stop = int(match.group(1)), int(match.group(2))
        step = int(match.group(3)) if match.group(3) is not None else 1
        if step < 1:
            raise bad("K must be at least 1")
        if not start < stop <= size:
            raise bad(f"need A < B <= {size} (the split has {size} images)")
        return list(range(start, stop, step))
    raise bad("not recognised")
