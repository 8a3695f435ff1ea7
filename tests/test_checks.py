"""core.checks and core.errors.one_line: the one place each input check and error line is written."""
from __future__ import annotations

import math

import pytest

from crt_bench.core.checks import check_alpha, check_choice, check_count, check_name, check_positive, check_sigma
from crt_bench.core.errors import CrtBenchError, one_line


@pytest.mark.parametrize("value", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_alpha_lies_strictly_between_0_and_1(value: float) -> None:
    with pytest.raises(CrtBenchError, match=r"alpha must lie in \(0, 1\)"):
        check_alpha(value)
    assert check_alpha(0.001) == 0.001


def test_counts_are_whole_numbers_at_least_the_minimum() -> None:
    assert check_count("n", 5) == 5 and check_count("--trace-steps", 0, minimum=0) == 0
    with pytest.raises(CrtBenchError, match="n0 must be >= 1, got 0"):
        check_count("n0", 0)
    for bad in (True, 2.5):
        with pytest.raises(CrtBenchError, match="whole number"):
            check_count("batch", bad)


@pytest.mark.parametrize("value", [0, -1, math.inf, math.nan])
def test_positive_numbers_are_finite(value: float) -> None:
    with pytest.raises(CrtBenchError, match="--hours must be > 0 and finite"):
        check_positive("--hours", value)
    with pytest.raises(CrtBenchError, match="sigma must be > 0 and finite"):
        check_sigma(value)


def test_names_and_choices() -> None:
    assert check_name("log name", "cohen-0.25") == "cohen-0.25"
    for bad in ("", "a/b", "a\\b", "run@N"):
        with pytest.raises(CrtBenchError, match="log name .* must be non-empty"):
            check_name("log name", bad)
    assert check_choice("executor", "local", ("local", "slurm")) == "local"
    with pytest.raises(CrtBenchError, match=r"unknown executor 'lcoal'; valid names: local, slurm \(hint\)$"):
        check_choice("executor", "lcoal", ("local", "slurm"), hint=" (hint)")


def test_one_line_collapses_whitespace_or_keeps_the_first_line() -> None:
    err = RuntimeError("Weights only load failed.\n  Re-running `torch.load`   may help\n\nmore")
    assert one_line(err) == "Weights only load failed. Re-running `torch.load` may help more"
    assert one_line(err, first=True) == "Weights only load failed."
    assert one_line(KeyError()) == "KeyError" and one_line("") == ""
