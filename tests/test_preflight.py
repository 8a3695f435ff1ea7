"""Fail fast, fail whole: a grid that could only fail stops before its first job, with one message."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from crt_bench.cli.app import main
from crt_bench.core.errors import CrtBenchError
from crt_bench.data import fashion_mnist
from crt_bench.grid import preflight


@pytest.fixture
def no_fashion_mnist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A machine without the Debian package, without a download cache and without internet."""
    monkeypatch.setattr(fashion_mnist, "DEBIAN_FASHION_MNIST_DIR", tmp_path / "no-debian")
    monkeypatch.setenv("CRT_BENCH_DATA", str(tmp_path / "cache"))
    import torchvision.datasets

    def offline(*args: object, **kwargs: object) -> None:
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz: <urlopen error Name or service not known>")

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    return tmp_path


def test_missing_dataset_stops_reproduce_before_any_job(no_fashion_mnist: Path, monkeypatch, capsys) -> None:
    from crt_bench.grid import executors, runner

    submitted: list[object] = []
    monkeypatch.setattr(executors, "make_executor", lambda *a, **k: submitted.append(a) or pytest.fail("executor made"))
    monkeypatch.setattr(runner, "run_grid", lambda *a, **k: pytest.fail("a job was submitted"))
    results = no_fashion_mnist / "results"
    start = time.perf_counter()
    with pytest.raises(SystemExit) as info:
        main(["reproduce", "--profile", "cpu", "--no-install-data", "--results", str(results),
              "--out", str(no_fashion_mnist / "plots")])
    elapsed = time.perf_counter() - start
    assert info.value.code == 2 and not submitted
    message = capsys.readouterr().err
    error_lines = [line for line in message.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1, "one message, whole"
    line = error_lines[0]
    for remedy in ("apt-get install dataset-fashion-mnist", "torchvision downloads it", "--data-dir DIR"):
        assert remedy in line
    assert "Name or service not known" in line  # what went wrong, too
    assert elapsed < 60
    assert not (results / "submitit").exists()


def test_apt_is_tried_as_root_and_its_failure_is_reported(no_fashion_mnist: Path, monkeypatch) -> None:
    calls: list[list[str]] = []

    class Done:
        def __init__(self, code: int) -> None:
            self.returncode, self.stdout, self.stderr = code, "", "E: Unable to locate package dataset-fashion-mnist"

    monkeypatch.setattr(preflight.os, "geteuid", lambda: 0)
    monkeypatch.setattr(preflight.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(preflight.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or Done(100))
    with pytest.raises(CrtBenchError) as info:
        preflight.ensure_dataset("fashion-mnist")
    assert ["apt-get", "update", "-qq"] in calls and calls[-1][:3] == ["apt-get", "install", "-y"]
    assert "Unable to locate package" in str(info.value)


def test_apt_success_is_used(no_fashion_mnist: Path, monkeypatch) -> None:
    """When apt-get installs the package, the files it put in place are found without a download."""
    from test_data import write_idx  # the real IDX format, written by the data tests

    debian = no_fashion_mnist / "no-debian"

    class Done:
        returncode, stdout, stderr = 0, "", ""

    def fake_apt(cmd: list[str], **kwargs: object) -> Done:
        debian.mkdir(exist_ok=True)
        for prefix in ("train", "t10k"):
            write_idx(debian, prefix, 4, gz=True)
        return Done()

    monkeypatch.setattr(preflight.os, "geteuid", lambda: 0)
    monkeypatch.setattr(preflight.shutil, "which", lambda name: "/usr/bin/apt-get")
    monkeypatch.setattr(preflight.subprocess, "run", fake_apt)
    assert "installed from Debian's dataset-fashion-mnist package" in preflight.ensure_dataset("fashion-mnist")


def test_not_root_names_the_command_to_run(no_fashion_mnist: Path, monkeypatch) -> None:
    monkeypatch.setattr(preflight.os, "geteuid", lambda: 1000)
    with pytest.raises(CrtBenchError, match=r"not root, so apt-get was not tried"):
        preflight.ensure_dataset("fashion-mnist")


def test_results_that_is_a_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "results"
    target.write_text("not a folder")
    with pytest.raises(CrtBenchError, match="is a file, not a folder"):
        preflight.check_results_dir(target)


def test_unwritable_results_is_refused(tmp_path: Path, monkeypatch) -> None:
    """Whatever makes the probe write fail (read-only mount, quota, permissions) is one clear error."""
    import tempfile

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(CrtBenchError, match="not writable \\(Read-only file system\\)"):
        preflight.check_results_dir(tmp_path / "results")


def test_full_disk_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CrtBenchError, match="MiB free"):
        preflight.check_results_dir(tmp_path, min_free_bytes=2**62)


def test_sweep_with_a_file_as_results_is_one_line_exit_2(tmp_path: Path, capsys) -> None:
    target = tmp_path / "results"
    target.write_text("x")
    with pytest.raises(SystemExit) as info:
        main(["sweep", "--method", "gaussian", "--arch", "tiny_cnn", "--results", str(target)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and "Traceback" not in err


def test_synthetic_needs_nothing(tmp_path: Path) -> None:
    report = preflight.preflight(datasets={"synthetic"}, results=tmp_path / "r")
    assert any("synthetic" in line for line in report.lines)
    assert any(line.startswith("device: ") for line in report.lines)
