"""Read and write CERTIFY logs in the tab-separated format of Cohen et al.'s ``certify.py``.

The format (also used by Salman et al., MACER, Consistency and SmoothMix)::

    idx<TAB>label<TAB>predict<TAB>radius<TAB>correct<TAB>time
    0<TAB>3<TAB>3<TAB>0.377<TAB>1<TAB>0:00:14.172309

* ``radius`` is printed with ``{:.3}`` (3 significant digits, e.g. ``0.0802``, ``5.2e-05``; ``0.0`` on
  abstain), so metrics recomputed from a log can differ from full-precision ones at thresholds.
* ``predict`` is ``-1`` for an abstention; ``correct`` is ``int(predict == label)``.
* ``time`` is ``str(datetime.timedelta)`` (``H:MM:SS[.ffffff]``, or ``D day[s], H:MM:SS[.ffffff]``
  past 24 h); the logs committed with Cohen et al.'s repository use float seconds (``15.4``).

In memory a log is a frame with columns ``idx, label, predict, radius, correct, seconds`` (the time
column renamed to say its unit), the same names as :func:`crt_bench.certify.driver.certify_dataset` uses.
"""
from __future__ import annotations

import datetime
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from crt_bench.core.atomic import atomic_write_bytes
from crt_bench.core.errors import CrtBenchError

HEADER = ("idx", "label", "predict", "radius", "correct", "time")
"""Header fields of a Cohen-format log."""

COLUMNS = ("idx", "label", "predict", "radius", "correct", "seconds")
"""Columns of the frame returned by :func:`read_cohen_log` and expected by :func:`write_cohen_log`."""

_TIMEDELTA = re.compile(r"(?:(\d+) days?, )?(\d+):([0-5]\d):([0-5]\d(?:\.\d+)?)")


def read_cohen_log(path: str | os.PathLike) -> pd.DataFrame:
    """Parse a Cohen-format log into a frame (int64 ``idx, label, predict, correct``; float64
    ``radius, seconds``).

    Every line is validated; the first problem raises :class:`CrtBenchError` naming the file, the
    1-based line number and what is wrong.  Trailing blank lines are ignored.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CrtBenchError(f"certify log not found: {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CrtBenchError(f"cannot read certify log {path}: {err}") from None

    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise CrtBenchError(f"{path}: empty file; expected the header line {_header_text()!r}")
    header = tuple(lines[0].strip().split("\t"))
    if header != HEADER:
        raise CrtBenchError(
            f"{path}: line 1: expected the header {_header_text()!r}, got {lines[0][:80]!r} "
            "(not a Cohen-format certify log, or the header is missing)"
        )

    records = []
    seen: dict[int, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        try:
            record = _parse_row(line)
        except ValueError as err:
            raise CrtBenchError(f"{path}: line {number}: {err}") from None
        if record[0] in seen:
            raise CrtBenchError(f"{path}: line {number}: idx {record[0]} already appeared on line {seen[record[0]]}")
        seen[record[0]] = number
        records.append(record)

    columns = list(zip(*records)) if records else [()] * len(COLUMNS)
    dtypes = (np.int64, np.int64, np.int64, np.float64, np.int64, np.float64)
    return pd.DataFrame({name: np.asarray(col, dtype=dt) for name, col, dt in zip(COLUMNS, columns, dtypes)})


def write_cohen_log(rows: pd.DataFrame, path: str | os.PathLike) -> None:
    """Write ``rows`` (columns :data:`COLUMNS`) in the exact format of the reference ``certify.py``.

    Each row is ``"{}\\t{}\\t{}\\t{:.3}\\t{}\\t{}"`` of idx, label, predict, radius (3 significant
    digits), correct and ``str(timedelta(seconds=seconds))``.  The file is written to a temporary file in
    the same directory and moved into place with ``os.replace``, so readers never see a partial log.
    """
    missing = [name for name in COLUMNS if name not in rows.columns]
    if missing:
        raise CrtBenchError(f"cannot write certify log {path}: missing column(s) {missing}")
    path = Path(path)
    lines = ["\t".join(HEADER)]
    for idx, label, predict, radius, correct, seconds in rows[list(COLUMNS)].itertuples(index=False):
        elapsed = datetime.timedelta(seconds=float(seconds))
        fields = (int(idx), int(label), int(predict), float(radius), int(correct), elapsed)
        lines.append("{}\t{}\t{}\t{:.3}\t{}\t{}".format(*fields))
    try:
        atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))
    except OSError as err:
        raise CrtBenchError(f"cannot write certify log {path}: {err}") from None


def _parse_row(line: str) -> tuple[int, int, int, float, int, float]:
    """One data line -> (idx, label, predict, radius, correct, seconds); ValueError says what is wrong."""
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) != len(HEADER):
        raise ValueError(
            f"expected {len(HEADER)} tab-separated columns ({', '.join(HEADER)}), got {len(fields)}: {line[:80]!r}"
        )
    idx = _integer(fields[0], "idx", minimum=0)
    label = _integer(fields[1], "label", minimum=0)
    predict = _integer(fields[2], "predict", minimum=-1)
    radius = _number(fields[3], "radius")
    correct = _integer(fields[4], "correct", minimum=0)
    if correct not in (0, 1):
        raise ValueError(f"correct must be 0 or 1, got {fields[4]!r}")
    if correct != int(predict == label):
        raise ValueError(f"correct={correct} contradicts predict={predict}, label={label}")
    if predict == -1 and radius != 0.0:
        raise ValueError(f"abstention (predict -1) with non-zero radius {fields[3]!r}")
    return idx, label, predict, radius, correct, _seconds(fields[5])


def _integer(text: str, name: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} is not an integer: {text!r}") from None
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} is not a number: {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {text!r}")
    return value


def _seconds(text: str) -> float:
    """``time`` field -> seconds: float seconds (``15.4``) or ``str(timedelta)`` form."""
    match = _TIMEDELTA.fullmatch(text.strip())
    if match:
        days, hours, minutes, seconds = match.groups()
        return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    try:
        return _number(text, "time")
    except ValueError:
        raise ValueError(
            f"time must be seconds (e.g. 15.4) or H:MM:SS[.ffffff] (e.g. 0:00:14.172309), got {text!r}"
        ) from None


def _header_text() -> str:
    return "\t".join(HEADER)


__all__ = ["COLUMNS", "HEADER", "read_cohen_log", "write_cohen_log"]
