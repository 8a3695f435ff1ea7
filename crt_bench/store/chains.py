"""Saved chain specifications under the results folder."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crt_bench.core.atomic import atomic_write_bytes

CHAINS_DIR = "chains"


def save_chain(spec: dict[str, Any], results: str | Path) -> Path:
    """Save a chain's specification (``ChainSpec.to_dict()``) as ``RESULTS/chains/<name>.json``."""
    return atomic_write_bytes(Path(results) / CHAINS_DIR / f"{spec['name']}.json",
                              json.dumps(spec, indent=1).encode())


def saved_chains(results: str | Path) -> list[dict[str, Any]]:
    folder = Path(results) / CHAINS_DIR
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
