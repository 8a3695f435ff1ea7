"""The proxy-teacher workflow (Table 1) and `crt-bench run --method M --help`."""
import math

import pytest

from crt_bench.cli.app import main
from crt_bench.grid.proxy import proxy_teacher_workflow
from crt_bench.store.store import ResultsStore


def test_proxy_teacher_cost_is_counted_in_the_student(tmp_path):
    teacher, student = proxy_teacher_workflow(tmp_path, student_arch="tiny_cnn", teacher_arch="tiny_cnn",
                                              teacher_method="gaussian", epochs=1, device="cpu", progress=False)
    store = ResultsStore(tmp_path)
    t, s = store.get_run(teacher), store.get_run(student)
    assert s["teacher_run_id"] == teacher and bool(s["teacher_dedicated"])
    assert s["teacher_train_seconds"] == pytest.approx(t["train_seconds"])
    assert s["total_train_seconds"] == pytest.approx(s["train_seconds"] + t["train_seconds"])


def test_a_shared_teacher_is_not_charged_to_the_student(tmp_path):
    from crt_bench.train.resolve import resolve_run_config
    from crt_bench.train.trainer import train_run

    store = ResultsStore(tmp_path)
    common = dict(profile="smoke", epochs=1, train_limit=128, device="cpu")
    teacher = train_run(resolve_run_config("gaussian", "tiny_cnn", **common), store, progress=False)
    student = train_run(resolve_run_config("crt", "tiny_cnn", teacher=teacher, **common), store, progress=False)
    s = store.get_run(student)
    assert s["total_train_seconds"] == pytest.approx(s["train_seconds"])
    assert s["teacher_train_seconds"] > 0


def test_external_teacher_has_unknown_teacher_hours(tmp_path):
    from crt_bench.train.resolve import resolve_run_config
    from crt_bench.train.trainer import train_run

    other = ResultsStore(tmp_path / "elsewhere")
    common = dict(profile="smoke", epochs=1, train_limit=128, device="cpu")
    teacher = train_run(resolve_run_config("gaussian", "tiny_cnn", **common), other, progress=False)
    store = ResultsStore(tmp_path / "here")
    path = str(other.run_dir(teacher) / "model.pt")
    student = train_run(resolve_run_config("crt", "tiny_cnn", teacher=path, teacher_dedicated=True, **common),
                        store, progress=False)
    s = store.get_run(student)
    assert math.isnan(s["teacher_train_seconds"]) and s["total_train_seconds"] == pytest.approx(s["train_seconds"])


def test_run_help_shows_the_methods_defaults(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--method", "crt", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "ce_weight" in out and "logit_l2" in out and "200 epochs" in out and "--teacher" in out


def test_run_help_for_unknown_method_is_an_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["run", "--method", "nope", "--help"])
    assert info.value.code == 2
    assert "unknown method" in capsys.readouterr().err
