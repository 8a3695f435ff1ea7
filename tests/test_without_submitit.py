"""A machine without submitit (a typical GPU box: preinstalled torch, no network) collects the whole suite
and writes a report; only submitting a grid needs submitit, and says so in one line.

Each check runs in a subprocess whose ``sitecustomize`` puts a meta-path finder in front of every other
that refuses ``submitit`` and its submodules, as if it were not installed.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from crt_bench.store.store import ResultsStore

REPO = Path(__file__).resolve().parents[1]

BLOCKER = '''
import sys


class _NoSubmitit:
    def find_spec(self, name, path=None, target=None):
        if name == "submitit" or name.startswith("submitit."):
            raise ImportError(f"No module named {name!r} (made unimportable by the test)")
        return None


sys.meta_path.insert(0, _NoSubmitit())
'''


@pytest.fixture
def without_submitit(tmp_path: Path) -> dict[str, str]:
    """The environment of a Python in which ``import submitit`` raises ImportError."""
    site = tmp_path / "no_submitit"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCKER)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(REPO)]), "OMP_NUM_THREADS": "1"}
    probe = subprocess.run([sys.executable, "-c", "import submitit"], env=env, capture_output=True, text=True,
                           timeout=60)
    assert probe.returncode != 0 and "made unimportable by the test" in probe.stderr
    return env


def _python(env: dict[str, str], *args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


def test_the_whole_suite_collects_without_submitit(without_submitit: dict[str, str]) -> None:
    # -m "": every marker (slow and gpu too), as `pytest -m gpu` on a GPU machine would collect them
    done = _python(without_submitit, "-m", "pytest", "--collect-only", "-q", "-m", "", "-p", "no:cacheprovider",
                   "tests")
    text = done.stdout + done.stderr
    assert done.returncode == 0, text[-3000:]
    assert "ERROR" not in text and not re.search(r"\d+ errors?\b", text), text[-3000:]
    count = int(re.search(r"(\d+) tests? collected", text).group(1))
    assert count > 500
    for module in ("test_launch", "test_chain", "test_messages", "test_profile_scaling", "test_distributed"):
        assert f"tests/{module}.py::" in text  # the modules that imported submitit through crt_bench.grid.runner


def _smoke_store(root: Path) -> None:
    """Timing rows (the slowdown table, Figure 1) and a last grid with a failed job (the missing cells)."""
    rows = []
    for method, teacher, epoch_s, epochs in (("gaussian", "", 10.0, 150), ("smoothmix", "", 50.0, 150),
                                              ("crt", "resnet110", 20.0, 200)):
        for arch in ("resnet20", "convnext_atto"):
            rows.append({"method": method, "arch": arch, "teacher_arch": teacher, "sigma": 0.25, "device": "cpu",
                         "batch_size": 16, "fwd_bwd_passes": 1.0, "fwd_only_passes": 0.0, "epoch_seconds": epoch_s,
                         "recipe_epochs": epochs, "recipe_hours": epoch_s * epochs / 3600, "precision": "fp32",
                         "time": "2026-01-01T00:00:00+00:00", "hours_basis": "projected", "profile": "smoke"})
    ResultsStore(root).append("timing", rows)
    from crt_bench.store.grid_status import GRID_STATUS_FILE

    status = [{"key": "smoothmix/resnet20/synthetic/s0.25/seed0/smoke/x0.02", "state": "failed",
               "run_id": "", "error": "RuntimeError: boom", "log": "", "time": "2026-01-01T00:00:00+00:00"}]
    (root / GRID_STATUS_FILE).write_text(json.dumps(status))


def test_plot_writes_the_report_without_submitit(without_submitit: dict[str, str], tmp_path: Path) -> None:
    results, out = tmp_path / "results", tmp_path / "plots"
    _smoke_store(results)
    done = _python(without_submitit, "-m", "crt_bench.cli", "plot", str(results), "--out", str(out))
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    report = (out / "REPORT.md").read_text()
    assert "## Slowdown vs Gaussian training" in report and "## Missing cells" in report
    assert "RuntimeError: boom" in report
    assert (out / "cumulative_training_time.png").stat().st_size > 1000


def test_a_grid_without_submitit_is_one_clear_error(without_submitit: dict[str, str], tmp_path: Path) -> None:
    done = _python(without_submitit, "-m", "crt_bench.cli", "sweep", "--method", "gaussian", "--arch", "tiny_cnn",
                   "--epochs", "1", "--no-certify", "--results", str(tmp_path / "results"))
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "submitit" in lines[0] and "pip install submitit" in lines[0]
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "results" / "runs").exists()  # nothing was trained
