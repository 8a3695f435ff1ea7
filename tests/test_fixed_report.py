"""The report built from a fixed store does not change, table for table, whatever the code's layout.

``tests/data/fixed_store`` is a small store written by ``make_fixed_store.sh`` (crt-bench commands on
tiny synthetic runs); ``tests/data/fixed_report`` is what ``build_all`` made of it when it was written.
Only the generation time and the store's own path differ from build to build (normalised here).
Regenerate both together, and only on purpose: ``python tests/test_fixed_report.py --regenerate``.
The store is in the flat layout of earlier crt-bench; the report must be the same from it as read, and
after ``compact_store`` moved it into partitions and merged each run's parts.
"""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pandas as pd
import pytest

from crt_bench.report.build import build_all
from crt_bench.store.compact import compact_store

HERE = Path(__file__).parent
STORE = HERE / "data" / "fixed_store"
GOLDEN = HERE / "data" / "fixed_report"
TEXT_SUFFIXES = (".md", ".csv", ".json")


def _build(tmp: Path, compacted: bool = False) -> Path:
    results, out = tmp / "results", tmp / "plots"
    shutil.copytree(STORE / "tables", results / "tables")
    if compacted:
        before, after = compact_store(results)
        assert after < before and not list((results / "tables").glob("*/*.parquet")), "every flat part migrated"
    build_all(results, out)
    return out


def _normalised(path: Path, results: Path) -> str:
    text = path.read_text().replace(str(results), "RESULTS")
    return re.sub(r"^Generated \S+ from", "Generated TIME from", text, flags=re.M)


def _texts(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): _normalised(p, out.parent / "results")
            for p in sorted(out.rglob("*")) if p.suffix in TEXT_SUFFIXES}


@pytest.mark.parametrize("compacted", [False, True], ids=["flat", "compacted"])
def test_report_from_the_fixed_store_is_unchanged(tmp_path: Path, compacted: bool) -> None:
    got = _texts(_build(tmp_path, compacted))
    expected = {str(p.relative_to(GOLDEN)): p.read_text() for p in sorted(GOLDEN.rglob("*")) if p.is_file()}
    assert sorted(got) == sorted(expected)  # the same files: no table appeared or vanished
    for name, text in expected.items():
        if name.endswith(".csv"):
            pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "plots" / name), pd.read_csv(GOLDEN / name),
                                          check_exact=False, rtol=1e-9, obj=name)
        else:
            assert got[name] == text, f"{name} changed"


if __name__ == "__main__" and sys.argv[1:] == ["--regenerate"]:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        texts = _texts(_build(Path(tmp)))
    shutil.rmtree(GOLDEN, ignore_errors=True)
    for name, text in texts.items():
        (GOLDEN / name).parent.mkdir(parents=True, exist_ok=True)
        (GOLDEN / name).write_text(text)
    print(f"{len(texts)} files written to {GOLDEN}")
