"""The prepared GPU check (benchmarks/gpu_check.sh) in its CPU mode: every step runs and is reported.

One run of the whole script at tiny sizes (about 2 minutes on 2 cores), so that the GPU mode, which
runs the same code at the paper's sizes, cannot rot between GPU machines.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from crt_bench.methods.registry import get_method, list_methods

ROOT = Path(__file__).resolve().parent.parent
STEPS = ("pytest_gpu", "certify", "train", "reproduce", "paper")


@pytest.fixture(scope="module")
def check(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--cpu", str(out)], env=env,
                          capture_output=True, text=True, timeout=540)
    return done, out


@pytest.mark.timeout(550)
def test_every_step_runs_and_is_reported(check: tuple[subprocess.CompletedProcess, Path]) -> None:
    done, out = check
    summary = (out / "summary.md").read_text()
    for step in STEPS:
        assert f"| {step} | ok |" in summary, f"{step} did not pass:\n{summary}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, done.stderr[-3000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 9, files
    assert {"summary.md", "measurements.csv", "REPORT.md", *(f"{s}.log" for s in STEPS)} <= set(files), files
    for heading in ("## Certification", "## One training step of every method", "| torch |", "TF32 default",
                    "## The slowdown table's methods in the paper protocol"):
        assert heading in summary


@pytest.mark.timeout(550)
def test_measurements_cover_precisions_and_methods(check: tuple[subprocess.CompletedProcess, Path]) -> None:
    _, out = check
    rows = pd.read_csv(out / "measurements.csv")
    cert = rows[rows["stage"] == "certify"].set_index("variant")
    for variant in ("fp32", "bf16"):
        assert cert.loc[variant, "status"] == "ok"
        assert cert.loc[variant, "noisy_forwards_per_s"] > 0
        assert cert.loc[variant, "seconds_per_image_n100k"] > 0
    assert cert.loc["tf32", "status"] == "n/a on cpu"  # TF32 needs CUDA compute capability >= 8
    train = rows[rows["stage"] == "train"]
    assert set(train["status"]) == {"ok"}
    assert {m.name for m in list_methods()} <= set(train["method"])
    gaussian = train[train["method"] == "gaussian"].iloc[0]
    assert gaussian["batch_ratio"] == pytest.approx(1.0)
    paper = rows[rows["stage"] == "paper"].set_index("variant")
    assert set(paper["status"]) == {"ok"} and set(paper["protocol"]) == {"paper"} and set(paper["precision"]) == {"fp32"}
    assert paper.loc["gaussian 150x256", "x_gaussian"] == pytest.approx(1.0)
    assert paper.loc["standard 200x128", "x_standard_200x128"] == pytest.approx(1.0)
    assert (paper.loc["smoothadv m=8", "optimizer_steps_per_batch"], paper.loc["smoothadv m=4", "optimizer_steps_per_batch"]) == (8, 4)
    assert paper.loc["smoothmix", "measure"].startswith("whole epochs") and "projected" in paper.loc["macer", "measure"]
    assert paper.loc["smoothadv m=8", "fwd_bwd_passes"] == pytest.approx(2 * paper.loc["smoothadv m=4", "fwd_bwd_passes"])
    macer = train[train["method"] == "macer"].iloc[0]  # 440 recipe epochs against Gaussian's 150
    epochs = get_method("macer").recipe.epochs / get_method("gaussian").recipe.epochs
    assert macer["recipe_ratio"] == pytest.approx(macer["epoch_ratio"] * epochs)


def test_a_failure_message_stays_on_one_table_row() -> None:
    """The first GPU run's multi-line TypeError broke the summary's certification table."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from gpu_check_summary import one_line
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    cell = one_line("failed: TypeError: zeros() got:\n * (size | names)\n * (size, out)\n")
    assert cell == "failed: TypeError: zeros() got: * (size / names) * (size, out)"
    assert one_line("x" * 500).endswith("...") and len(one_line("x" * 500)) == 240
    assert one_line(float("nan")) == ""
