"""Interleaved timing: per-round ratios with an interval for their median, and flags on untrustworthy ratios."""
import itertools

import pandas as pd
import pytest
import torch

from crt_bench.report.figures import cumulative_hours
from crt_bench.report.slowdown import dominates, ratio_flags, slowdown_markdown, slowdown_table
from crt_bench.store.store import ResultsStore
from crt_bench.timing import probe as timing
from crt_bench.timing.probe import ProbeConfig
from crt_bench.timing.rounds import interleaved_rows, median_interval, median_interval_ranks
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


def test_rounds_rotate_and_same_round_ratios_cancel_a_load_change():
    cfg = ProbeConfig(batches=1, warmup=1, batch_size=4)
    # 3 jobs x 4 rounds. The machine gets 10x slower from round 3 on; within a round smoothmix is always
    # 3x gaussian and crt 1.5x: per-round ratios are exact although the medians of raw times are not.
    rounds = [[1.0, 3.0, 1.5], [1.0, 3.0, 1.5], [10.0, 30.0, 15.0], [10.0, 30.0, 15.0]]
    order_by_round = [[(i + r) % 3 for i in range(3)] for r in range(4)]
    durations = [rounds[r][i] for r in range(4) for i in order_by_round[r]]
    rows = interleaved_rows("tiny_cnn", [("gaussian", ""), ("smoothmix", ""), ("crt", "tiny_cnn")], cfg=cfg,
                            rounds=4, clock=StepClock(durations))
    by = {r["method"]: r for r in rows}
    assert by["smoothmix"]["batch_ratio"] == pytest.approx(3.0)
    assert by["smoothmix"]["batch_ratio_low"] == pytest.approx(3.0) == by["smoothmix"]["batch_ratio_high"]
    assert by["crt"]["batch_ratio"] == pytest.approx(1.5) and by["gaussian"]["batch_ratio"] == pytest.approx(1.0)
    assert by["smoothmix"]["rounds"] == 4 and by["smoothmix"]["interleaved"] is True


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
