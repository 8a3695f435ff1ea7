"""Interleaved timing: per-round ratios with an interval for their median, and flags on untrustworthy ratios."""
import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch

from crt_bench.core.errors import CrtBenchError
from crt_bench.report.figures import cumulative_hours
from crt_bench.report.slowdown import dominates, ratio_flags, slowdown_markdown, slowdown_table
from crt_bench.store.store import ResultsStore
from crt_bench.timing import probe as timing
from crt_bench.timing.probe import PROBES, ProbeConfig
from crt_bench.timing.grid import run_timing_grid
from crt_bench.timing.rounds import (enough_rounds, interleaved_rows, median_interval, median_interval_ranks,
                                     relative_half_width, settled)
from crt_bench.train.step import TrainStep


def test_median_interval_ranks_are_order_statistics_with_their_coverage():
    assert median_interval_ranks(6) == (1, 6, pytest.approx(1 - 2 / 64))
    j, k, cov = median_interval_ranks(20)
    assert (j, k) == (6, 15) and cov >= 0.95  # the narrowest pair that still covers 95%
    assert median_interval_ranks(3)[2] < 0.95  # too few rounds: the range, at its true level
    assert median_interval([3.0, 1.0, 2.0, 5.0, 4.0, 6.0]) == (3.5, 1.0, 6.0, pytest.approx(1 - 2 / 64))


class StepClock:
    """Every timed block lasts the next value of ``durations`` (cycled)."""

    def __init__(self, durations):
        self.durations, self.now, self.calls = itertools.cycle(durations), 0.0, 0

    def __call__(self):
        self.calls += 1
        if self.calls % 2 == 0:  # the end of a block
            self.now += next(self.durations)
        return self.now


def in_timing_order(rounds: list[list[float]]) -> list[float]:
    """Per-round, per-job seconds in the order the rounds time them (the order rotates by one a round)."""
    jobs = len(rounds[0])
    return [seconds[(i + r) % jobs] for r, seconds in enumerate(rounds) for i in range(jobs)]


def test_rounds_rotate_and_same_round_ratios_cancel_a_load_change():
    cfg = ProbeConfig(batches=1, warmup=1, batch_size=4)
    # 3 jobs x 4 rounds. The machine gets 10x slower from round 3 on; within a round smoothmix is always
    # 3x gaussian and crt 1.5x: per-round ratios are exact although the medians of raw times are not.
    rounds = [[1.0, 3.0, 1.5], [1.0, 3.0, 1.5], [10.0, 30.0, 15.0], [10.0, 30.0, 15.0]]
    rows = interleaved_rows("tiny_cnn", [("gaussian", ""), ("smoothmix", ""), ("crt", "tiny_cnn")], cfg=cfg,
                            rounds=4, clock=StepClock(in_timing_order(rounds)))
    by = {r["method"]: r for r in rows}
    assert by["smoothmix"]["batch_ratio"] == pytest.approx(3.0)
    assert by["smoothmix"]["batch_ratio_low"] == pytest.approx(3.0) == by["smoothmix"]["batch_ratio_high"]
    assert by["crt"]["batch_ratio"] == pytest.approx(1.5) and by["gaussian"]["batch_ratio"] == pytest.approx(1.0)
    assert by["smoothmix"]["rounds"] == 4 and by["smoothmix"]["interleaved"] is True


ADAPTIVE = ProbeConfig(batches=1, warmup=1, batch_size=4, repeats=3, target_half_width=0.05, max_repeats=12)
JOBS = [("gaussian", ""), ("smoothmix", ""), ("consistency", "")]


def adaptive_rows(ratios_by_round: list[tuple[float, float]]) -> tuple[dict, StepClock]:
    """Interleaved rows of ``JOBS`` whose per-round seconds are Gaussian 1 s and the given ratios."""
    clock = StepClock(in_timing_order([[1.0, *ratios] for ratios in ratios_by_round]))
    return {r["method"]: r for r in interleaved_rows("tiny_cnn", JOBS, cfg=ADAPTIVE, clock=clock)}, clock


def test_steady_rounds_stop_at_the_fewest_that_reach_the_interval_level():
    by, clock = adaptive_rows([(3.0, 2.0)] * 12)
    # 3 rounds are asked for, but [min, max] of 3 covers the median at 75% only: 6 rounds are the fewest at 95%
    assert {r["rounds"] for r in by.values()} == {6} and clock.calls == 2 * 6 * len(JOBS)
    assert by["smoothmix"]["ratio_level"] >= 0.95 and by["smoothmix"]["batch_ratio"] == pytest.approx(3.0)
    assert by["smoothmix"]["rounds_max"] == 12 and by["consistency"]["ratio_target"] == 0.05
    assert len(json.loads(by["smoothmix"]["round_seconds"])) == 6


def test_noisy_rounds_run_to_the_cap_and_keep_their_wide_interval():
    # smoothmix's ratio swings 2x <-> 4x from round to round; consistency's is steady
    by, clock = adaptive_rows([(2.0 if r % 2 else 4.0, 2.0) for r in range(12)])
    assert by["smoothmix"]["rounds"] == 12 == by["consistency"]["rounds"] and clock.calls == 2 * 12 * len(JOBS)
    assert (by["smoothmix"]["batch_ratio_low"], by["smoothmix"]["batch_ratio_high"]) == (pytest.approx(2.0),
                                                                                          pytest.approx(4.0))


def test_rounds_stop_on_the_first_round_whose_intervals_are_tight():
    # two outliers early: [min, max] (6-8 rounds) spans them; from 9 rounds the interval is the 2nd..8th values
    ratios = [(5.0, 2.0), (1.0, 2.0)] + [(3.0, 2.0)] * 10
    by, _ = adaptive_rows(ratios)
    assert by["smoothmix"]["rounds"] == 9
    assert by["smoothmix"]["batch_ratio_low"] == pytest.approx(3.0) == by["smoothmix"]["batch_ratio_high"]


def test_the_stopping_rule_needs_the_level_and_every_ratio_within_the_target():
    assert not settled([[1.0] * 5], 0.05)  # 5 rounds: [min, max] at 93.8%, below 95%
    assert settled([[1.0] * 6, [2.0] * 6], 0.05)
    assert not settled([[1.0] * 6, [2.0] * 5 + [2.5]], 0.05)  # one wide ratio keeps the architecture going
    assert relative_half_width([2.0] * 5 + [2.5]) == pytest.approx(0.25 / 2.0)
    with pytest.raises(ValueError):
        settled([[1.0] * 6, [1.0] * 7], 0.05)


def test_stopping_on_a_tight_interval_keeps_its_coverage():
    # log-normal per-round ratios around a true median of 1 whose spread (5%) is the target's: about half
    # of the architectures stop early, half run to the cap. An interval stopped on when it happens to be
    # narrow could miss the median more often than its level says; it does not here (3 rounds would: 75%).
    rng = np.random.default_rng(0)
    covered, stops, trials = 0, set(), 2000
    for _ in range(trials):
        draws = list(np.exp(rng.normal(0.0, 0.05, 12)))
        k = next((k for k in range(1, 12) if enough_rounds([draws[:k]], 3, 0.05)), 12)
        stops.add(k)
        _, low, high, _ = median_interval(draws[:k])
        covered += low <= 1.0 <= high
    assert covered / trials >= 0.94 and min(stops) == 6 and {7, 12} <= stops


def test_adaptive_probe_settings_are_checked_and_the_cpu_profiles_use_them():
    with pytest.raises(CrtBenchError, match="max repeats"):
        ProbeConfig(repeats=6, target_half_width=0.05, max_repeats=4)
    with pytest.raises(CrtBenchError, match="half-width"):
        ProbeConfig(target_half_width=0.0)
    assert ProbeConfig(repeats=3).round_cap == 3 and ProbeConfig(repeats=3, max_repeats=9).round_cap == 3
    for profile in ("cpu", "cpu-full"):
        assert (PROBES[profile].repeats, PROBES[profile].round_cap, PROBES[profile].rounds_text()) == (6, 12, "6-12")
    assert PROBES["smoke"].rounds_text() == "2"


class FakeCudaMemory:
    """torch.cuda's allocator statistics for probes built on a CPU: a model stays allocated while its probe
    lives (4 bytes per parameter); a step briefly needs ``TRANSIENT`` bytes per optimizer step on top."""

    TRANSIENT = 1_000_000

    def __init__(self) -> None:
        self.allocated = self.peak = 0

    def memory_allocated(self, device=None) -> int:
        return self.allocated

    def max_memory_allocated(self, device=None) -> int:
        return self.peak

    def reset_peak_memory_stats(self, device=None) -> None:
        self.peak = self.allocated

    def hold(self, nbytes: int) -> None:
        self.allocated += nbytes
        self.peak = max(self.peak, self.allocated)

    def spike(self, nbytes: int) -> None:
        self.peak = max(self.peak, self.allocated + nbytes)


def test_each_probe_of_a_round_gets_its_own_peak_memory(monkeypatch):
    fake = FakeCudaMemory()
    for name in ("memory_allocated", "max_memory_allocated", "reset_peak_memory_stats"):
        monkeypatch.setattr(torch.cuda, name, getattr(fake, name))
    monkeypatch.setattr(timing, "_tracks_memory", lambda device: True)  # as on a GPU
    monkeypatch.setattr(timing, "synchronize", lambda device: None)
    real_build, real_step = timing.build_model, TrainStep.__call__

    def build(*args, **kwargs):
        model = real_build(*args, **kwargs)
        fake.hold(4 * sum(p.numel() for p in model.parameters()))
        return model

    def step(self, x, y):
        fake.spike(self.chunks * FakeCudaMemory.TRANSIENT)
        return real_step(self, x, y)

    monkeypatch.setattr(timing, "build_model", build)
    monkeypatch.setattr(TrainStep, "__call__", step)
    rows = interleaved_rows("tiny_cnn", [("gaussian", ""), ("consistency", "")],
                            cfg=ProbeConfig(batches=1, warmup=1, batch_size=4), rounds=2)
    params = 4 * sum(p.numel() for p in real_build("tiny_cnn", num_classes=10, in_chans=3, mean=[0.5] * 3,
                                                    std=[0.25] * 3).parameters())
    by = {r["method"]: r["peak_memory_bytes"] for r in rows}
    # its own model and its own step (consistency: m = 2 optimizer steps), not the first probe's model
    # still alive, and not one round-wide maximum
    assert by == {"gaussian": params + FakeCudaMemory.TRANSIENT, "consistency": params + 2 * FakeCudaMemory.TRANSIENT}
    assert fake.peak == 2 * params + 2 * FakeCudaMemory.TRANSIENT  # what one global reading gave every row


def test_a_cpu_probe_records_no_peak_memory():
    rows = interleaved_rows("tiny_cnn", [("gaussian", "")], cfg=ProbeConfig(batches=1, warmup=1, batch_size=4),
                            rounds=1)
    assert rows[0]["peak_memory_bytes"] == -1


def probe_row(method, teacher, fwd_bwd, fwd_only, ratio, low, high, arch="convnext_atto"):
    return {"method": method, "arch": arch, "teacher_arch": teacher, "sigma": 0.25, "device": "cpu-x",
            "profile": "cpu", "time": "2026-01-01T00:00:00", "batch_size": 16, "seconds_per_batch": ratio,
            "epoch_seconds": ratio * 3125, "recipe_epochs": {"crt": 200}.get(method, 150),
            "recipe_hours": ratio * 3125 * {"crt": 200}.get(method, 150) / 3600,
            "fwd_bwd_passes": fwd_bwd, "fwd_only_passes": fwd_only, "precision": "fp32",
            "interleaved": True, "rounds": 6, "batch_ratio": ratio, "batch_ratio_low": low, "batch_ratio_high": high,
            "epoch_ratio": ratio, "epoch_ratio_low": low, "epoch_ratio_high": high}


def test_an_impossible_ordering_and_a_wide_interval_are_flagged(tmp_path):
    store = ResultsStore(tmp_path)
    store.append("timing", [
        probe_row("gaussian", "", 1, 0, 1.0, 1.0, 1.0),
        probe_row("crt", "resnet110", 1, 1, 0.90, 0.85, 0.95),  # more passes than Gaussian, measured faster
        probe_row("consistency", "", 2, 0, 1.9, 1.8, 2.0),
        probe_row("smoothmix", "", 12, 0, 9.0, 5.0, 14.0),  # wide interval
        probe_row("smoothadv", "", 44, 0, 1.5, 1.4, 1.6),  # out-works consistency and smoothmix, measured faster
    ])
    t = slowdown_table(store).set_index("method")
    assert "faster than gaussian despite more passes" in t.loc["crt", "flag"]
    assert "wide interval" in t.loc["smoothmix", "flag"]
    assert "faster than consistency, smoothmix despite" in t.loc["smoothadv", "flag"]
    assert "gaussian" not in t.loc["smoothadv", "flag"]  # 1.5x Gaussian is possible
    assert t.loc["consistency", "flag"] == "" and t.loc["gaussian", "flag"] == ""
    assert t.loc["crt", "recipe_ratio"] == pytest.approx(0.9 * 200 / 150)
    assert t.loc["crt", "recipe_ratio_low"] == pytest.approx(0.85 * 200 / 150)
    md = slowdown_markdown(slowdown_table(store))
    assert "⚠ faster than gaussian despite more passes" in md and "interleaved, 6 rounds" in md
    assert "1.20 [1.13, 1.27]" in md  # crt's recipe ratio with its interval


def test_a_consistent_table_is_not_flagged_and_crt_is_not_compared_with_other_teachers():
    part = pd.DataFrame([
        dict(method="gaussian", teacher="", fwd_bwd_passes=1, fwd_only_passes=0, batch_ratio=1.0,
             batch_ratio_low=1.0, batch_ratio_high=1.0),
        dict(method="crt", teacher="resnet110", fwd_bwd_passes=1, fwd_only_passes=1, batch_ratio=2.1,
             batch_ratio_low=2.0, batch_ratio_high=2.2),
        dict(method="consistency", teacher="", fwd_bwd_passes=2, fwd_only_passes=0, batch_ratio=2.0,
             batch_ratio_low=1.9, batch_ratio_high=2.1),
    ])
    assert ratio_flags(part) == ["", "", ""]  # consistency < crt is possible: a big teacher's forward
    # MACER (16 passes in one batch) may beat SmoothMix (12 sequential passes): not flagged; 2x the passes is
    macer = pd.DataFrame([
        dict(method="smoothmix", teacher="", fwd_bwd_passes=12, fwd_only_passes=0, batch_ratio=9.0,
             batch_ratio_low=8.8, batch_ratio_high=9.2),
        dict(method="macer", teacher="", fwd_bwd_passes=16, fwd_only_passes=0, batch_ratio=7.0,
             batch_ratio_low=6.8, batch_ratio_high=7.2),
        dict(method="smoothadv", teacher="", fwd_bwd_passes=44, fwd_only_passes=0, batch_ratio=8.0,
             batch_ratio_low=7.8, batch_ratio_high=8.2),
    ])
    assert ratio_flags(macer) == ["", "", "faster than smoothmix despite more passes"]
    assert not dominates(part.iloc[2], part.iloc[1]) and dominates(part.iloc[1], part.iloc[0])
    # The first GPU check: MACER at its recipe's 64 images per batch against Consistency's 256 is cheaper per
    # loader batch (1.21x vs 2.09x) but not per epoch (5.12x vs 2.04x): the same images decide, no flag.
    gpu = pd.DataFrame([
        dict(method="consistency", teacher="", fwd_bwd_passes=2, fwd_only_passes=0, batch_ratio=2.09,
             batch_ratio_low=2.0, batch_ratio_high=2.2, epoch_ratio=2.04),
        dict(method="macer", teacher="", fwd_bwd_passes=16, fwd_only_passes=0, batch_ratio=1.21,
             batch_ratio_low=1.1, batch_ratio_high=1.3, epoch_ratio=5.12),
    ])
    assert ratio_flags(gpu) == ["", ""]
    assert ratio_flags(gpu.assign(epoch_ratio=[2.04, 1.9]))[1] == "faster than consistency despite more passes"
    timed_apart = part.assign(batch_ratio_low=float("nan"), batch_ratio_high=float("nan"))
    assert ratio_flags(timed_apart)[1] == "timed apart (no interval)"


def test_figure1_data_carries_the_interval_and_the_flags(tmp_path):
    store = ResultsStore(tmp_path)
    rows = []
    for arch in ("convnext_atto", "mobilenetv4_conv_small"):
        rows += [probe_row("gaussian", "", 1, 0, 1.0, 1.0, 1.0, arch), probe_row("smoothmix", "", 12, 0, 9.0, 8.0, 10.0, arch),
                 probe_row("crt", "resnet110", 1, 1, 0.9 if arch == "convnext_atto" else 1.2, 0.85, 1.3, arch)]
    store.append("timing", rows)
    data = cumulative_hours(slowdown_table(store))
    sm = data[data["line"] == "SmoothMix"].sort_values("position")
    assert (sm["cumulative_low"] < sm["cumulative_hours"]).all() and (sm["cumulative_hours"] < sm["cumulative_high"]).all()
    crt = data[data["line"].str.startswith("CRT, pretrained")].set_index("arch")
    assert "despite more passes" in crt.loc["convnext_atto", "flag"]


def test_the_grid_stores_the_rounds_run_and_repeats_raise_an_adaptive_cap(tmp_path):
    rows = run_timing_grid(tmp_path, profile="cpu", methods=["gaussian", "consistency"], archs=["tiny_cnn"],
                           repeats=7, batch_size=4, device="cpu")
    stored = ResultsStore(tmp_path).read("timing").set_index("method")
    assert len(rows) == 2 and set(stored["rounds_max"]) == {12} and set(stored["ratio_target"]) == {0.05}
    assert 7 <= stored.loc["consistency", "rounds"] <= 12
    assert stored.loc["consistency", "rounds"] == len(json.loads(stored.loc["consistency", "round_seconds"]))
    fixed = run_timing_grid(tmp_path / "smoke", profile="smoke", methods=["gaussian"], archs=["tiny_cnn"], repeats=3,
                            device="cpu")
    assert list(fixed["rounds"]) == [3] and list(fixed["rounds_max"]) == [3] and fixed["ratio_target"].isna().all()
