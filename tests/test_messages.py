"""Messages that say the fix, names that stay one name, and banners that describe the real run."""
from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import FAST_RUN, cli, last_line

from crt_bench.core.errors import CrtBenchError
from crt_bench.grid.jobs import GridSpec
from crt_bench.train.resolve import resolve_run_config


def test_crt_without_a_teacher_says_how_to_get_one() -> None:
    with pytest.raises(CrtBenchError) as info:
        resolve_run_config("crt", "convnext", profile="cpu")
    message = str(info.value)
    assert "--teacher RUN_ID" in message
    assert "crt-bench run --method smoothmix" in message and "--profile cpu" in message
    assert "crt-bench proxy --student-arch convnext_atto" in message


def test_an_alias_is_stored_under_its_canonical_name() -> None:
    assert resolve_run_config("gaussian", "convnext", profile="smoke").arch == "convnext_atto"
    jobs = GridSpec(methods=["gaussian", "crt"], archs=["convnext", "convnext_atto"], teacher_method="gaussian",
                    teacher_archs=["resnet20"]).jobs()
    assert {j.arch for j in jobs} == {"convnext_atto", "resnet20"}
    assert len(jobs) == 3  # resnet20 teacher, gaussian and crt convnext_atto: the alias made no second job


def test_teacher_data_mismatch_names_the_flag_that_fixes_it(tmp_path: Path) -> None:
    code, out, err = cli("run", "--method", "gaussian", "--arch", "tiny_cnn", *FAST_RUN, "--results", tmp_path)
    assert code == 0, err
    teacher = last_line(out)
    code, out, err = cli("run", "--method", "crt", "--arch", "tiny_cnn", "--teacher", teacher, "--dataset",
                         "fashion-mnist", *FAST_RUN, "--results", tmp_path)
    assert code == 2
    message = " ".join(err.split())
    assert "--dataset synthetic" in message and "--profile" in message


def test_the_run_banner_describes_the_run_made(tmp_path: Path) -> None:
    code, out, err = cli("run", "--method", "gaussian", "--arch", "tiny_cnn", *FAST_RUN, "--epochs", "1",
                         "--results", tmp_path)
    assert code == 0, err
    text = " ".join(err.split())
    assert "synthetic (256 training images)" in text and "1 epochs" in text
    from crt_bench.config.profiles import get_profile

    assert get_profile("smoke").description not in text  # the profile's blurb would describe another run


def test_summary_never_cuts_a_run_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from crt_bench.cli import output as cli_module

    monkeypatch.setattr(cli_module.out, "width", 80)  # a narrow terminal: the table must shrink elsewhere
    code, out, err = cli("run", "--method", "gaussian", "--arch", "tiny_cnn", *FAST_RUN, "--results", tmp_path)
    run_id = last_line(out)
    code, out, err = cli("certify", run_id, "--n0", "10", "--n", "50", "--subset", "range:0:2", "--no-progress",
                         "--results", tmp_path)
    assert code == 0, err
    code, out, err = cli("summary", tmp_path)
    assert code == 0, err
    assert run_id in out
