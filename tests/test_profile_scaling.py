"""Profiles scale every method's recipe by one factor: epochs and lr milestones keep the recipes' proportions."""
import dataclasses

import pytest

from crt_bench.config import profiles
from crt_bench.config.run import RunConfig
from crt_bench.config.schedule import scaled_epochs
from crt_bench.grid.jobs import GridSpec, Job
from crt_bench.train.resolve import describe_scale, resolve_run_config, scaled_recipe


@pytest.mark.parametrize("scale,expected", [
    # method: (epochs, milestones) for the recipes gaussian 150 (50, 100), smoothmix 150 (51, 101),
    # crt 200 (100, 150), macer 440 (199, 399)
    (0.1, {"gaussian": (15, (5, 10)), "smoothmix": (15, (5, 10)), "crt": (20, (10, 15)), "macer": (44, (20, 40))}),
    (0.2, {"gaussian": (30, (10, 20)), "smoothmix": (30, (10, 20)), "crt": (40, (20, 30)), "macer": (88, (40, 80))}),
    (0.04, {"gaussian": (6, (2, 4)), "smoothmix": (6, (2, 4)), "crt": (8, (4, 6)), "macer": (18, (8, 16))}),
    (1.0, {"gaussian": (150, (50, 100)), "smoothmix": (150, (51, 101)), "crt": (200, (100, 150)),
           "macer": (440, (199, 399))}),
])
def test_each_method_keeps_its_recipe_proportions(scale, expected):
    for method, (epochs, milestones) in expected.items():
        r = scaled_recipe(method, scale)
        assert (r.epochs, r.milestones) == (epochs, milestones), method
        cfg = resolve_run_config(method, "tiny_cnn", profile="smoke", teacher="t" if method == "crt" else None,
                                 epoch_scale=scale)
        assert (cfg.epochs, cfg.milestones, cfg.epoch_scale, cfg.recipe_epochs) == (epochs, milestones, scale,
                                                                                    r.recipe_epochs)


def test_scaled_epochs_rounds_half_up_and_never_reaches_zero():
    assert scaled_epochs(150, 0.01) == 2  # 1.5 -> 2 (not banker's rounding to 2 by luck: 2.5 below)
    assert scaled_epochs(250, 0.01) == 3
    assert scaled_epochs(200, 0.001) == 1
    with pytest.raises(Exception, match="epoch scale must be > 0"):
        scaled_epochs(150, 0.0)


def test_profile_factor_applies_and_explicit_epochs_win(monkeypatch):
    monkeypatch.setitem(profiles.PROFILES, "smoke", dataclasses.replace(profiles.PROFILES["smoke"], epoch_scale=0.1))
    crt = resolve_run_config("crt", "tiny_cnn", profile="smoke", teacher="t")
    gauss = resolve_run_config("gaussian", "tiny_cnn", profile="smoke")
    assert (crt.epochs, gauss.epochs) == (20, 15) and crt.epochs / gauss.epochs == pytest.approx(200 / 150)
    fixed = resolve_run_config("crt", "tiny_cnn", profile="smoke", teacher="t", epochs=3)
    assert (fixed.epochs, fixed.epoch_scale) == (3, None)
    # recorded with the run: survives the JSON round trip
    assert RunConfig.from_json(crt.to_json()).epoch_scale == 0.1


def test_the_factor_is_in_the_job_key_and_the_banner(monkeypatch):
    key = Job("gaussian", "tiny_cnn", profile="smoke").key
    monkeypatch.setitem(profiles.PROFILES, "smoke", dataclasses.replace(profiles.PROFILES["smoke"], epoch_scale=0.5))
    assert Job("gaussian", "tiny_cnn", profile="smoke").key != key  # a new factor is a new run, never a skip
    assert "/x0.5" in Job("gaussian", "tiny_cnn", profile="smoke").key
    assert "/e3" in Job("gaussian", "tiny_cnn", profile="smoke", epochs=3).key
    line = describe_scale(0.5, ["gaussian", "crt"])
    assert "0.5 x" in line and "gaussian 75 (lr decays at 25, 50)" in line and "crt 100 (lr decays at 50, 75)" in line


def test_plan_describes_each_methods_epochs():
    from crt_bench.grid.reproduce import plan_for

    plan = plan_for("cpu")
    text = plan.describe()
    scale = profiles.PROFILES["cpu"].epoch_scale
    for method in ("gaussian", "smoothmix", "crt"):
        assert f"{method} {scaled_recipe(method, scale).epochs} (" in text
    assert plan.grid.epochs is None  # the plan leaves the epochs to the profile's factor
    assert isinstance(plan.grid, GridSpec)


def test_cpu_full_plan_meets_the_evidence_numbers_and_cpu_states_what_it_does_not():
    from crt_bench.config.subsets import parse_subset
    from crt_bench.grid.reproduce import plan_for
    from crt_bench.models.registry import get_arch

    for name in ("cpu", "cpu-full"):
        plan = plan_for(name)
        prof = profiles.get_profile(name)
        jobs = plan.grid.jobs()
        teachers = {j.teacher.key for j in jobs if j.teacher is not None}
        assert len(teachers) == 1  # one SmoothMix teacher, trained once, reused by every CRT student
        students = {j.arch for j in jobs if j.teacher is not None}
        assert len(students) >= 2 and all(get_arch(a).generation >= 2019 for a in students)
        for arch in students:
            assert {j.method for j in jobs if j.arch == arch} == {"gaussian", "smoothmix", "crt"}
        assert prof.dataset == "fashion-mnist" and prof.certify.n >= 10_000
        images = len(parse_subset(prof.certify.subset, 10_000))
        assert (images >= 500) == (name == "cpu-full"), images
        assert all(j.certify for j in jobs if j.method in ("smoothmix", "crt"))
    assert "PROFILE=cpu-full meets every number" in plan_for("cpu").describe()
    assert "meets every number" in plan_for("cpu-full").describe()
