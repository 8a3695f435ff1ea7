"""Reading and writing Cohen-format certify logs, on the published fixture files and on broken ones."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crt_bench.core.errors import CrtBenchError
from crt_bench.store.cohen_log import COLUMNS, read_cohen_log, write_cohen_log

LOGS = Path(__file__).resolve().parent / "data" / "certify_logs"
HEADER = "idx\tlabel\tpredict\tradius\tcorrect\ttime\n"


def fixture(name: str) -> Path:
    path = LOGS / name
    assert path.is_file(), f"published certify log missing: {path} (tests/data/certify_logs ships with the repository)"
    return path


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "log.tsv"
    path.write_text(text)
    return path


def test_float_seconds_time_column() -> None:
    rows = read_cohen_log(fixture("cohen_resnet110_sigma0.25_skip20.tsv"))
    assert tuple(rows.columns) == COLUMNS
    assert [str(t) for t in rows.dtypes] == ["int64", "int64", "int64", "float64", "int64", "float64"]
    assert len(rows) == 500
    assert rows["idx"].tolist() == list(range(0, 10_000, 20))
    # first lines: "0 3 3 0.378 1 15.4" and "20 7 -1 0.0 0 15.6"
    assert rows.iloc[0].tolist() == [0, 3, 3, 0.378, 1, 15.4]
    assert rows.iloc[1].tolist() == [20, 7, -1, 0.0, 0, 15.6]


def test_timedelta_time_column() -> None:
    rows = read_cohen_log(fixture("salman_gaussian_resnet110_sigma0.25.tsv"))
    assert len(rows) == 10_000
    assert rows["idx"].tolist() == list(range(10_000))
    # first line: "0 3 3 0.377 1 0:00:14.172309"
    assert rows.iloc[0].tolist() == [0, 3, 3, 0.377, 1, pytest.approx(14.172309, abs=1e-9)]
    assert rows["seconds"].between(1, 60).all()


def test_long_timedelta_forms(tmp_path: Path) -> None:
    """str(timedelta) past one day, and without microseconds."""
    lines = ["0\t1\t1\t0.5\t1\t1 day, 2:03:04.500000", "1\t2\t2\t0.5\t1\t3 days, 0:00:00", "2\t2\t-1\t0.0\t0\t0:00:07"]
    rows = read_cohen_log(write(tmp_path, HEADER + "\n".join(lines) + "\n\n"))
    assert rows["seconds"].tolist() == [86400 + 7384.5, 3 * 86400, 7.0]


@pytest.mark.parametrize(
    "line, problem",
    [
        ("40\t3\t3\t0.5\t1", "expected 6 tab-separated columns"),
        ("40\t3\t3\t0.5\t1\t15.4\textra", "expected 6 tab-separated columns"),
        ("40 3 3 0.5 1 15.4", "expected 6 tab-separated columns"),
        ("", "expected 6 tab-separated columns"),
        ("40\tcat\t3\t0.5\t1\t15.4", "label is not an integer: 'cat'"),
        ("4.0\t3\t3\t0.5\t1\t15.4", "idx is not an integer"),
        ("40\t3\t3\tbig\t1\t15.4", "radius is not a number: 'big'"),
        ("40\t3\t3\tnan\t1\t15.4", "radius must be a finite number"),
        ("40\t3\t3\t0.5\t2\t15.4", "correct must be 0 or 1"),
        ("40\t3\t4\t0.5\t1\t15.4", "correct=1 contradicts predict=4, label=3"),
        ("40\t3\t-1\t0.5\t0\t15.4", "abstention (predict -1) with non-zero radius"),
        ("40\t3\t-2\t0.0\t0\t15.4", "predict must be >= -1"),
        ("40\t3\t3\t0.5\t1\t0:00:1x.5", "time must be seconds"),
        ("40\t3\t3\t0.5\t1\t1:75:00", "time must be seconds"),
        ("40\t3\t3\t0.5\t1\t-3.0", "time must be seconds"),
        ("0\t3\t3\t0.5\t1\t15.4", "idx 0 already appeared on line 2"),
    ],
)
def test_malformed_line_names_file_and_line(tmp_path: Path, line: str, problem: str) -> None:
    good = "0\t3\t3\t0.378\t1\t15.4\n20\t7\t-1\t0.0\t0\t0:00:15.600000\n"
    path = write(tmp_path, HEADER + good + line + "\n21\t1\t1\t0.1\t1\t15.0\n")
    with pytest.raises(CrtBenchError) as err:
        read_cohen_log(path)
    message = str(err.value)
    assert message.startswith(f"{path}: line 4: ")
    assert problem in message


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "empty file"),
        ("\n\n", "empty file"),
        ("0\t3\t3\t0.378\t1\t15.4\n", "line 1: expected the header"),
        ("idx\tlabel\tpredict\tradius\tcorrect\n0\t3\t3\t0.3\t1\n", "line 1: expected the header"),
    ],
)
def test_empty_or_headerless_file(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(CrtBenchError, match=problem):
        read_cohen_log(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CrtBenchError, match="certify log not found"):
        read_cohen_log(tmp_path / "nope.tsv")


def test_header_only_file_is_an_empty_log(tmp_path: Path) -> None:
    rows = read_cohen_log(write(tmp_path, HEADER))
    assert len(rows) == 0 and tuple(rows.columns) == COLUMNS


def test_write_format_matches_reference_certify_py(tmp_path: Path) -> None:
    rows = pd.DataFrame(
        {
            "idx": [0, 20, 40],
            "label": [3, 7, 1],
            "predict": [3, -1, 1],
            "radius": [0.37712345, 0.0, 0.0000521987],
            "correct": [1, 0, 1],
            "seconds": [14.172309, 15.6, 90061.25],
        }
    )
    path = tmp_path / "out" / "log.tsv"
    write_cohen_log(rows, path)
    assert path.read_text() == HEADER + (
        "0\t3\t3\t0.377\t1\t0:00:14.172309\n"
        "20\t7\t-1\t0.0\t0\t0:00:15.600000\n"
        "40\t1\t1\t5.22e-05\t1\t1 day, 1:01:01.250000\n"
    )
    assert os.listdir(path.parent) == ["log.tsv"]  # no temporary file left behind


def test_round_trip_keeps_three_significant_digits(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "idx": np.arange(200),
            "label": rng.integers(0, 10, 200),
            "predict": rng.integers(-1, 10, 200),
            "radius": rng.uniform(0, 4, 200) * rng.choice([1.0, 1e-3, 1e-6], 200),
            "seconds": rng.uniform(0, 200_000, 200),
        }
    )
    rows.loc[rows["predict"] == -1, "radius"] = 0.0
    rows["correct"] = (rows["predict"] == rows["label"]).astype(np.int64)
    path = tmp_path / "log.tsv"
    write_cohen_log(rows, path)
    back = read_cohen_log(path)
    for name in ("idx", "label", "predict", "correct"):
        assert back[name].tolist() == rows[name].tolist()
    assert back["radius"].tolist() == [float(f"{r:.3g}") for r in rows["radius"]]
    np.testing.assert_allclose(back["seconds"], rows["seconds"], atol=1e-6)


@pytest.mark.parametrize(
    "name", ["salman_smoothadv_T10_m4_eps255_resnet110_sigma0.25.tsv", "jeong_macer_resnet110_sigma0.50.tsv"]
)
def test_rewriting_a_published_log_is_byte_identical(tmp_path: Path, name: str) -> None:
    """Parse + write reproduces the reference script's output exactly (incl. radii like 5.2e-05)."""
    source = fixture(name)
    target = tmp_path / name
    write_cohen_log(read_cohen_log(source), target)
    assert target.read_bytes() == source.read_bytes()


def test_write_is_atomic_on_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, HEADER + "0\t3\t3\t0.378\t1\t15.4\n")
    before = path.read_bytes()
    rows = read_cohen_log(fixture("cohen_resnet110_sigma1.00_skip20.tsv"))
    with pytest.raises(CrtBenchError, match=r"missing column\(s\) \['seconds'\]"):
        write_cohen_log(rows.drop(columns="seconds"), path)

    def failing_replace(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(CrtBenchError, match="cannot write certify log .*disk full"):
        write_cohen_log(rows, path)
    assert path.read_bytes() == before  # the old log is intact ...
    assert os.listdir(tmp_path) == ["log.tsv"]  # ... and the temporary file is gone
