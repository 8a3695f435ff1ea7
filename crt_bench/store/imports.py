"""Imported Cohen logs: importing a log into the store and its leaderboard metadata."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from crt_bench.core.atomic import atomic_write_bytes
from crt_bench.core.checks import check_name
from crt_bench.core.constants import IMPORT_PREFIX
from crt_bench.core.errors import CrtBenchError
from crt_bench.store.cohen_log import read_cohen_log
from crt_bench.store.store import ResultsStore


def import_log(path: str | Path, name: str, store: ResultsStore, *, sigma: float | None = None,
               n0: int = 100, n: int = 100_000, alpha: float = 0.001) -> pd.DataFrame:
    """Store a published Cohen-format TSV log as a certification named ``name``."""
    check_name("log name", name)
    if not store.read("certify", where={"run_id": IMPORT_PREFIX + name}, columns=["cert_id"]).empty:
        raise CrtBenchError(f"a certification named {name!r} already exists in {store.root}; choose another --name")
    rows = read_cohen_log(path)
    rows.insert(0, "cert_id", name)
    rows.insert(0, "run_id", IMPORT_PREFIX + name)
    rows = rows.assign(n0=n0, n=n, alpha=alpha, sigma=float("nan") if sigma is None else float(sigma),
                       subset="imported", seed=-1, precision="unknown", noise_dtype="unknown", device="unknown",
                       git_commit="", source=str(Path(path).resolve()),
                       time=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    store.append("certify", rows)
    return rows
def file_slug(text: str) -> str:
    """``text`` as a file name: every character but letters, digits and ``-_.`` becomes ``_``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


IMPORTS_DIR = "leaderboard_imports"  # RESULTS/leaderboard_imports/<name>.json: what import-log --hours adds


# -- from a results store -------------------------------------------------------------------------------
def record_import_meta(results: str | Path, name: str, **meta: Any) -> Path:
    """What ``import-log`` knows beyond the log (hours, method, arch, teacher, dataset, device)."""

    return atomic_write_bytes(Path(results) / IMPORTS_DIR / f"{file_slug(name)}.json",
                              json.dumps({k: v for k, v in meta.items() if v is not None}, indent=1).encode())


def read_import_meta(results: Path, name: str) -> dict[str, Any]:
    path = results / IMPORTS_DIR / f"{file_slug(name)}.json"
    return json.loads(path.read_text()) if path.is_file() else {}
