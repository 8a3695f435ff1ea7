"""The ``gpu-smoke`` profile: the paper profile's code path at the smallest size, run here on the CPU.

``crt-bench reproduce --profile gpu-smoke --device cpu`` with the plan's models swapped for ``tiny_cnn``,
256 training images (the grid's own overrides) and 16-image timing probes: teacher, students,
certification, probes and REPORT.md, every run at its recipe's batch size and one epoch.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from test_cli import cli

from crt_bench.config.profiles import get_profile
from crt_bench.config.subsets import parse_subset
from crt_bench.grid import reproduce
from crt_bench.methods.registry import get_method, list_methods
from crt_bench.models.registry import get_arch
from crt_bench.store.store import ResultsStore
from crt_bench.timing.probe import PROBES


def test_the_gpu_smoke_plan_is_the_paper_plan_at_the_smallest_size() -> None:
    smoke, paper = reproduce.plan_for("gpu-smoke"), reproduce.plan_for("paper")
    prof = get_profile("gpu-smoke")
    assert prof.batch_size is None and prof.batch_size == get_profile("paper").batch_size  # each recipe's batch
    assert prof.dataset == "synthetic" and prof.train_limit == 512
    assert (prof.certify.n0, prof.certify.n, prof.certify.alpha) == (100, 1_000, 0.001)
    assert len(parse_subset(prof.certify.subset, 512)) == 8
    assert prof.certify.precision == get_profile("paper").certify.precision
    assert PROBES["gpu-smoke"].batch_size is None and PROBES["paper"].batch_size is None  # probes too
    assert smoke.grid.methods == paper.grid.methods and smoke.grid.teacher_method == paper.grid.teacher_method
    assert smoke.grid.teacher_archs == ["resnet110"] and smoke.grid.epochs is None
    assert all(get_arch(a).generation >= 2022 for a in smoke.grid.archs)
    for job in smoke.jobs():  # one epoch of every method, at its recipe's batch size
        from crt_bench.train.resolve import resolve_run_config

        cfg = resolve_run_config(job.method, job.arch, profile=job.profile, teacher="t" if job.teacher else None)
        assert cfg.epochs == 1 and cfg.batch_size == get_method(job.method).recipe.batch_size
        assert cfg.dataset == "synthetic" and cfg.amp and cfg.teacher_precision == "auto"
    on_cpu = smoke.on_device("cpu")
    assert {job.device for job in on_cpu.jobs()} == {"cpu"} and on_cpu.grid.archs == smoke.grid.archs


def test_reproduce_gpu_smoke_on_a_cpu_writes_the_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = reproduce.plan_for

    def tiny(profile: str, data_dir: str | None = None) -> reproduce.Plan:
        return real(profile, data_dir).on_arch("tiny_cnn", train_limit=256)

    monkeypatch.setattr(reproduce, "plan_for", tiny)
    # The probes' recipe batches (SmoothAdv: 44 passes of 256 images) would take minutes here: 16 images.
    monkeypatch.setitem(PROBES, "gpu-smoke", replace(PROBES["gpu-smoke"], batch_size=16, batches=1))
    results, plots = tmp_path / "results", tmp_path / "plots"
    # 4 of the profile's 8 images (--certify-subset, applied to every job): the two denoised models' CERTIFY
    # through a DnCNN is most of this test's time on a CPU.
    code, out, err = cli("reproduce", "--profile", "gpu-smoke", "--device", "cpu", "--executor", "debug",
                         "--certify-subset", "range:0:4", "--results", results, "--out", plots)
    assert code == 0, err[-3000:]
    report = (plots / "REPORT.md").read_text()
    assert "gpu-smoke" in report and "## Slowdown vs Gaussian training" in report
    for variant in ("mse", "stability"):  # the two denoised runs are told apart in every table
        assert f"| Denoised smoothing ({variant}) | tiny_cnn |" in report and f"variant {variant}" in report
    store = ResultsStore(results)
    runs = store.runs()
    # the grid, denoised smoothing (a standard classifier, the mse and stability denoisers), as in the paper plan
    assert sorted(runs["method"]) == ["crt", "denoised", "denoised", "gaussian", "smoothmix", "standard"]
    assert (runs["status"] == "finished").all() and (runs["profile"] == "gpu-smoke").all()
    assert runs["device"].str.startswith("cpu").all()
    grid_runs = runs[runs["method"].isin(["crt", "gaussian", "smoothmix"])]
    assert (grid_runs["epochs"] == 1).all()
    for _, row in runs.iterrows():  # 256, 256, 128, ...: no profile override
        assert row["batch_size"] == get_method(row["method"]).recipe.batch_size
    certs = store.read("certify")
    certified = set(runs.loc[runs["method"] != "standard", "run_id"])
    assert set(certs["run_id"]) == certified and set(certs["n"]) == {1_000}
    assert sorted(certs.groupby(["run_id", "procedure"])["idx"].nunique().unique()) == [4]
    assert set(store.read("certifications")["key_subset"]) == {"range:0:4"}
    crt = runs.loc[runs["method"] == "crt", "run_id"].item()
    assert set(certs.loc[certs["procedure"] == "transfer", "run_id"]) == {crt}  # certified by transfer as well
    timing = store.read("timing")
    assert set(timing["profile"]) == {"gpu-smoke"} and set(timing["batch_size"]) == {16}
    assert set(timing["method"]) == {m.name for m in list_methods()}
