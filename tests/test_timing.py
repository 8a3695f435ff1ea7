"""Timer arithmetic with a fake clock: no test here depends on how fast this machine is."""
import itertools
import math

import pytest
import torch


from crt_bench.methods.registry import get_method
from crt_bench.timing.probe import ProbeConfig, probe, summarize


def test_summarize_projects_epoch_and_recipe():
    s = summarize([0.5, 0.4, 0.6], batch_size=256, train_images=50_000, epochs=150)
    assert s["seconds_per_batch"] == 0.5
    assert s["batches_per_epoch"] == 196  # ceil(50000 / 256)
    assert s["epoch_seconds"] == pytest.approx(98.0)
    assert s["recipe_hours"] == pytest.approx(98.0 * 150 / 3600)
    assert s["images_per_s"] == pytest.approx(512.0)
    assert s["relative_spread"] == pytest.approx(0.4)


class FakeClock:
    """Advances by a fixed amount per loader batch: the probe must divide and project correctly."""

    def __init__(self, per_call: list[float]):
        self.values = itertools.accumulate(itertools.chain([0.0], itertools.cycle(per_call)))

    def __call__(self) -> float:
        return next(self.values)


def test_probe_uses_the_clock_and_the_recipe():
    # Each repeat's (start, stop) pair advances by 2.0 s over 4 batches -> 0.5 s per loader batch.
    cfg = ProbeConfig(batches=4, warmup=0, repeats=3, batch_size=8, train_images=1000)
    row = probe("gaussian", "tiny_cnn", cfg=cfg, clock=FakeClock([2.0, 0.0]))
    recipe = get_method("gaussian").recipe
    assert row["seconds_per_batch"] == pytest.approx(0.5)
    assert row["batches_per_epoch"] == 125
    assert row["epoch_seconds"] == pytest.approx(62.5)
    assert row["recipe_hours"] == pytest.approx(62.5 * recipe.epochs / 3600)
    assert row["hours_basis"] == "projected" and row["precision"] == "fp32"  # CPUs train in float32 (step.CPU_TRAINING_AUTOCAST)
    assert row["device"].startswith("cpu")
    assert row["teacher_arch"] == ""


def test_probe_of_a_teacher_method_records_the_teacher():
    cfg = ProbeConfig(batches=1, warmup=0, repeats=1, batch_size=4, train_images=100)
    row = probe("crt", "tiny_cnn", teacher_arch="tiny_cnn", cfg=cfg, clock=FakeClock([1.0, 0.0]))
    assert row["teacher_arch"] == "tiny_cnn" and row["recipe_epochs"] == 200
    assert math.isclose(row["epoch_seconds"], 25.0)


def test_pass_counts_explain_the_cost():
    cfg = ProbeConfig(batches=1, warmup=0, repeats=1, batch_size=4, train_images=100)
    gauss = probe("gaussian", "tiny_cnn", cfg=cfg, clock=FakeClock([1.0, 0.0]))
    crt = probe("crt", "tiny_cnn", teacher_arch="tiny_cnn", cfg=cfg, clock=FakeClock([1.0, 0.0]))
    assert (gauss["fwd_bwd_passes"], gauss["fwd_only_passes"]) == (1.0, 0.0)
    assert (crt["fwd_bwd_passes"], crt["fwd_only_passes"]) == (1.0, 1.0)  # + the teacher's forward
    # denoised smoothing (the probe's default variant, mse) trains the denoiser in front of a frozen classifier:
    # its passes are the denoiser's (the first GPU check's table said 0.00: the counter watched the composed
    # model, whose forward the mse loss never calls)
    denoised = probe("denoised", "tiny_cnn", cfg=cfg, clock=FakeClock([1.0, 0.0]))
    assert (denoised["fwd_bwd_passes"], denoised["fwd_only_passes"]) == (1.0, 0.0)


def test_timing_grid_stores_rows_and_skips_done_probes(tmp_path):
    from crt_bench.store.store import ResultsStore
    from crt_bench.timing.grid import run_timing_grid

    kwargs = dict(profile="smoke", methods=["gaussian", "crt"], archs=["tiny_cnn"], teachers=["tiny_cnn"],
                  device="cpu")
    first = run_timing_grid(tmp_path, **kwargs)
    assert sorted(first["method"]) == ["crt", "gaussian"] and set(first["profile"]) == {"smoke"}
    again = run_timing_grid(tmp_path, **kwargs)
    assert again.empty  # resumable: nothing re-timed
    assert len(ResultsStore(tmp_path).read("timing")) == 2
    forced = run_timing_grid(tmp_path, force=True, **kwargs)
    assert len(forced) == 2


def test_timing_grid_rejects_bad_names(tmp_path):
    from crt_bench.core.errors import CrtBenchError
    from crt_bench.timing.grid import run_timing_grid

    with pytest.raises(CrtBenchError, match="unknown architecture"):
        run_timing_grid(tmp_path, profile="smoke", archs=["alexnet9"], device="cpu")
    with pytest.raises(CrtBenchError, match="unknown profile"):
        run_timing_grid(tmp_path, profile="huge", device="cpu")
