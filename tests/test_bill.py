"""The paper plan's certification sizing and the bill before the spend (crt_bench.grid.bill).

Hand-computed figures come from the H200 check's measurements as printed in its summary, not from the code.
"""
from __future__ import annotations

import re

import pytest
from test_cli import assert_user_error, cli

from crt_bench.core.errors import CrtBenchError
from crt_bench.grid.bill import JobCost, _critical_path, _makespan, forwards_per_s, job_cost, step_seconds_per_image
from crt_bench.grid.jobs import Job
from crt_bench.grid.reproduce import PAPER_NOT_TRAINED, plan_for


@pytest.fixture(scope="module")
def paper():
    return plan_for("paper")


def test_paper_certifies_500_images_at_n_100000_in_bf16_compiled_on_cuda_and_not_gaussian_students(paper):
    jobs = paper.jobs()
    for job in (j for j in jobs if j.certify):
        cuda = job.certify_config("cuda")
        assert (cuda.subset, cuda.n, cuda.n0, cuda.precision, cuda.compile, cuda.agreement_images) == (
            "skip:20", 100_000, 100, "bf16", True, 20)
        assert job.certify_config("cpu").precision == "fp32"  # bf16 + compile is the CUDA engine's
    gaussian = [j for j in jobs if j.method == "gaussian"]
    assert gaussian and not any(j.certify for j in gaussian) and {j.seed for j in gaussian} == {0}
    for method in ("smoothmix", "crt"):
        students = [j for j in jobs if j.method == method and j.arch not in ("resnet110", "resnet20")]
        trained = {j.key for j in students if j.trained is None}  # certifications are jobs of their own
        assert {j.seed for j in students} == {0, 1} and {j.trained.key for j in students if j.certify} == trained
    whole = paper.with_certify(subset="all", precision="fp32").jobs()
    cfg = next(j for j in whole if j.certify).certify_config("cuda")
    assert (cfg.subset, cfg.precision, cfg.compile, cfg.checks_agreement) == ("all", "fp32", False, False)


def test_a_subset_beyond_the_test_set_or_a_bad_precision_is_refused_before_any_job(paper):
    with pytest.raises(CrtBenchError, match="B <= 10000"):
        paper.with_certify(subset="range:0:10001")
    with pytest.raises(CrtBenchError, match="precision"):
        paper.with_certify(precision="int8")


def test_measured_jobs_cost_what_the_h200_figures_say():
    teacher = Job("smoothmix", "resnet110", profile="paper")
    cost = job_cost(teacher)
    assert cost.train_source == "measured" and cost.certify_source == "measured"
    assert cost.train_hours == pytest.approx(150 * 50_000 * 0.3972 / 256 / 3600)  # 3.23 h
    seconds = 500 * 100_100 / 131_043 + 20 * 100_100 / 25_629  # 500 images, then 20 again in fp32 (agreement)
    assert cost.certify_hours == pytest.approx(seconds / 3600)
    fp32 = job_cost(Job("smoothmix", "resnet110", profile="paper", certify_subset="all", certify_precision="fp32"))
    assert fp32.certify_hours == pytest.approx(10_000 * 100_100 / 25_629 / 3600)  # the README's 10.8 h
    reuse = job_cost(Job("denoised", "convnext_atto", profile="paper", hparams=(("variant", "mse"),),
                         denoiser=Job("denoised", "resnet18", profile="paper", hparams=(("variant", "mse"),))))
    assert reuse.train_hours == 0 and reuse.train_source == ""  # reuses a denoiser: nothing to train


def test_projection_goes_through_both_measured_architectures_and_grows_with_flops():
    for arch in ("resnet110", "convnext_atto"):
        assert step_seconds_per_image("smoothmix", arch)[1] == "measured"
    small, src = step_seconds_per_image("smoothmix", "mobilenetv4_conv_small")  # 0.032 GFLOPs
    big, _ = step_seconds_per_image("smoothmix", "densenet121")  # 1.777 GFLOPs
    assert src == "FLOPs-projected" and 0 < small < 0.185 / 256 < 0.3972 / 256 < big
    assert forwards_per_s("resnet110", "bf16+compile") == (131_043.0, "measured")
    assert forwards_per_s("densenet121", "bf16+compile")[0] < 131_043 < forwards_per_s("regnetx_002", "bf16+compile")[0]
    with pytest.raises(CrtBenchError, match="precision 'fp16'"):
        forwards_per_s("resnet110", "fp16")


def test_critical_path_and_wall_clock_of_a_small_grid():
    t = Job("smoothmix", "resnet110", profile="paper")
    jobs = {"t": t, "a": Job("crt", "resnet18", profile="paper", teacher=t),
            "b": Job("crt", "dla46_c", profile="paper", teacher=t), "c": Job("gaussian", "resnet18", profile="paper")}
    hours = {"t": 3.0, "a": 2.0, "b": 1.0, "c": 4.5}
    costs = [JobCost(jobs[k], hours[k], 0.0, "measured", "") for k in ("t", "a", "b", "c")]
    path, length = _critical_path(costs)
    assert [j.key for j in path] == [t.key, jobs["a"].key] and length == 5.0
    assert _makespan(costs, 1) == 10.5  # one GPU: the sum
    assert _makespan(costs, 4) == 5.0  # enough GPUs: the critical path
    assert _makespan(costs, 2) == 5.5  # t and c from 0; a from 3 (t done) to 5; b from 4.5 (c done) to 5.5


def test_dry_run_prints_every_job_the_total_the_critical_path_and_the_wall_clock(tmp_path, paper):
    code, text, err = cli("reproduce", "--profile", "paper", "--dry-run", "--results", tmp_path / "r")
    assert code == 0, err
    rows = [line for line in text.splitlines() if re.search(r"\s\d+\.\d\d\s+\d+\.\d\d\s+\d+\.\d\d  ", line)]
    assert len(rows) == len(paper.jobs()) + 1  # every job and the timing probes
    total = float(re.search(r"total: ([\d.]+) GPU-hours", text).group(1))
    assert total == pytest.approx(sum(float(r.split()[-4]) for r in rows), abs=0.1 + 0.005 * len(rows))
    assert re.search(r"critical path: [\d.]+ hours: smoothmix", text)
    one, eight = map(float, re.search(r"wall-clock: ([\d.]+) hours on 1 GPU, ([\d.]+) hours on 8 GPUs", text).groups())
    assert one == pytest.approx(total, abs=0.05) and total / 8 <= eight < one
    assert "gpu-check-2026-11-30-h200.md" in text and "crt-bench list archs --sizes" in text
    assert not (tmp_path / "r").exists()  # nothing submitted, nothing written
    code, _, err = cli("reproduce", "--profile", "paper", "--certify-subset", "range:0:20000", "--results", tmp_path / "r")
    assert_user_error(code, err, "B <= 10000")
    assert not (tmp_path / "r").exists()


def test_recorded_gflops_are_what_the_registry_counts():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from crt_bench.models.denoiser import FULL_SIZE, DenoiserConfig, DnCNN
    from crt_bench.models.stats import arch_stats
    from crt_bench.timing.measured import DENOISER_GFLOPS, GFLOPS

    for arch in ("resnet110",):  # the one the certification rates were measured on
        assert GFLOPS[arch] == pytest.approx(arch_stats(arch)["flops_per_image"] / 1e9, abs=5e-4)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        DnCNN(DenoiserConfig(*FULL_SIZE, 3, 0.25, "mse")).eval()(torch.zeros(1, 3, 32, 32))
    assert DENOISER_GFLOPS == pytest.approx(counter.get_total_flops() / 1e9, abs=5e-4)


def test_other_noise_levels_are_one_flag_with_their_bill(paper):
    two = paper.with_sigmas([0.25, 0.5])
    jobs = two.jobs()
    assert len(jobs) == 2 * len(paper.jobs()) and {j.sigma for j in jobs} == {0.25, 0.5}
    assert all(n.sigma == j.sigma for j in jobs for n in j.needs)  # a denoised run's classifier and denoiser too
    assert two.bill().total_hours > 1.9 * paper.bill().total_hours
    full = plan_for("cpu-full").with_sigmas([0.5])
    assert {j.sigma for j in full.jobs()} == {0.5}  # the chain's links and root included
    with pytest.raises(CrtBenchError, match="sigma"):
        paper.with_sigmas([0.0])


def test_the_paper_plan_meets_its_budget_and_its_left_out_students_are_one_flag_away(tmp_path):
    code, text, err = cli("reproduce", "--profile", "paper", "--dry-run", "--results", tmp_path / "r")
    assert code == 0, err
    total = float(re.search(r"total: ([\d.]+) GPU-hours", text).group(1))
    eight = float(re.search(r"hours on 1 GPU, ([\d.]+) hours on 8 GPUs", text).group(1))
    assert total <= 100 and eight <= 16  # issue 27's goal, from the measured figures
    trained = {line.split()[1] for line in text.splitlines() if line.startswith(("smoothmix ", "crt ", "gaussian "))}
    assert trained.isdisjoint(PAPER_NOT_TRAINED) and "mobilenetv4_conv_small" in trained
    assert all(name in text for name in PAPER_NOT_TRAINED)  # named in the plan's notes
    code, every, err = cli("reproduce", "--profile", "paper", "--dry-run", "--student", "all", "--results", tmp_path / "r")
    assert code == 0, err
    assert float(re.search(r"total: ([\d.]+) GPU-hours", every).group(1)) > total + 50
    assert {line.split()[1] for line in every.splitlines() if line.startswith("smoothmix ")} >= set(PAPER_NOT_TRAINED)
    code, _, err = cli("reproduce", "--profile", "paper", "--dry-run", "--student", "resnet_999", "--results", tmp_path)
    assert_user_error(code, err, "unknown architecture 'resnet_999'")
