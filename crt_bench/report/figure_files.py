"""Writing a matplotlib figure as PNG (for REPORT.md) and PDF (for papers), each atomically."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from crt_bench.core.atomic import atomic_write_bytes

SUFFIXES = (".png", ".pdf")


def save_figure(fig: Any, stem: str | Path, *, dpi: int = 150) -> list[Path]:
    """``stem.png`` and ``stem.pdf``; a crash mid-write never leaves a half-written figure behind."""
    import io

    paths = []
    for suffix in SUFFIXES:
        buffer = io.BytesIO()
        fig.savefig(buffer, format=suffix[1:], dpi=dpi)
        paths.append(atomic_write_bytes(Path(stem).with_suffix(suffix), buffer.getvalue()))
    return paths
