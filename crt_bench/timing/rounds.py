"""Interleaved timing: the methods of one architecture timed round-robin in one process.

Probes timed one after another measure the machine's load as much as the method: on a shared 2-core
machine a method timed while another process runs looks slower than one timed a minute later. Here
every method of an architecture is built and warmed up first; then, for ``rounds`` rounds, each
method times ``cfg.batches`` loader batches, the order rotating by one every round. A load change
hits the methods of a round alike, so the per-round ratio to Gaussian (same round) cancels it.

Per method: the median over rounds of the per-round ratio to Gaussian, per loader batch and per epoch
(epoch: times the ratio of batches per epoch), and a distribution-free confidence interval for that
median from order statistics of the per-round ratios (:func:`median_interval_ranks`; with 6 rounds
it is [min, max] at 96.9%).

Rounds are adaptive when the probe configuration has a ``target_half_width`` (:func:`settled`): after its
``repeats`` rounds the check runs after every round, and the rounds stop once every method's interval
reaches :data:`INTERVAL_LEVEL` (6 rounds at 95%: fewer give [min, max] at a lower level) and its
half-width is at most the target's fraction of the ratio; else they go on up to ``max_repeats``. The
interval stopped on is the one reported, and the rows record the rounds run, the cap and the target.
"""
from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from functools import lru_cache

import torch
from scipy.stats import binom

from crt_bench.core.constants import INTERVAL_LEVEL
from crt_bench.timing.paper import prepare_paper
from crt_bench.timing.probe import PreparedProbe, ProbeConfig, kernel_seconds, prepare



@lru_cache(maxsize=None)
def median_interval_ranks(k: int, level: float = INTERVAL_LEVEL) -> tuple[int, int, float]:
    """1-based order statistics ``(j, k - j + 1)`` bracketing the median of ``k`` draws with probability
    >= ``level`` (the narrowest such pair), and that probability; ``(1, k, p)`` with p < level when k is
    too small for the level."""
    if k < 1:
        raise ValueError("at least one round")
    best = (1, k, 1 - 2 * binom.cdf(0, k, 0.5))
    for j in range(2, k // 2 + 1):
        coverage = 1 - 2 * binom.cdf(j - 1, k, 0.5)
        if coverage >= level:
            best = (j, k - j + 1, coverage)
    return best[0], best[1], float(best[2])


def median_interval(values: list[float], level: float = INTERVAL_LEVEL) -> tuple[float, float, float, float]:
    """(median, low, high, coverage) of ``values`` by :func:`median_interval_ranks`."""
    ordered = sorted(values)
    j, k, coverage = median_interval_ranks(len(ordered), level)
    return statistics.median(ordered), ordered[j - 1], ordered[k - 1], coverage


def relative_half_width(values: list[float], level: float = INTERVAL_LEVEL) -> float:
    """Half the width of the :func:`median_interval` of ``values`` over its median."""
    median, low, high, _ = median_interval(values, level)
    return (high - low) / 2 / median if median > 0 else float("inf")


def settled(ratios: list[list[float]], target: float, level: float = INTERVAL_LEVEL) -> bool:
    """Whether every per-round ratio series gives an interval at ``level`` (enough rounds) no wider than
    ``target`` x its median on either side."""
    rounds = {len(r) for r in ratios}
    if len(rounds) != 1:
        raise ValueError("every series needs the same rounds")
    if median_interval_ranks(rounds.pop(), level)[2] < level:
        return False
    return all(relative_half_width(r, level) <= target for r in ratios)


def enough_rounds(ratios: list[list[float]], least: int, target: float | None) -> bool:
    """The stopping rule, checked after every round: ``least`` rounds ran and, with a ``target``, the
    intervals have :func:`settled`. Stopping on the interval that is reported keeps its coverage: in a
    seeded simulation (tests/test_timing_rounds.py) it stays at the level under log-normal noise."""
    return len(ratios[0]) >= least and (target is None or settled(ratios, target))


def interleaved_rows(
    arch: str,
    jobs: list[tuple[str, str]],
    *,
    sigma: float = 0.25,
    cfg: ProbeConfig | None = None,
    rounds: int | None = None,
    device: torch.device | str = "cpu",
    clock: Callable[[], float] = time.perf_counter,
) -> list[dict]:
    """Time ``jobs`` (method, teacher arch or ""[, recipe "EPOCHSxBATCH" or ""]) on ``arch`` round-robin; one
    timing row per job, through ``cfg.protocol``'s loop (the paper's: :mod:`crt_bench.timing.paper`).

    ``rounds`` (default ``cfg.repeats``) rounds run; then more, one at a time, while ``cfg`` has a target
    that the intervals do not meet yet (:func:`settled`), up to ``cfg.round_cap``. Gaussian is added
    when missing (every ratio needs it). Rows carry the usual probe columns (from every round's seconds
    per batch) plus ``interleaved``, ``rounds`` (run), ``rounds_max``, ``ratio_target`` (NaN: fixed
    rounds), ``round_seconds`` (JSON list), ``batch_ratio[_low|_high]``, ``epoch_ratio[_low|_high]`` and
    ``ratio_level``.
    """
    cfg = cfg or ProbeConfig()
    least = cfg.repeats if rounds is None else rounds
    if least < 1:
        raise ValueError("rounds must be >= 1")
    cap = max(least, cfg.round_cap)
    full = [(job[0], job[1], job[2] if len(job) > 2 else "") for job in jobs]
    if ("gaussian", "", "") not in full:
        full = [("gaussian", "", ""), *full]
    build = prepare_paper if cfg.protocol == "paper" else prepare
    prepared = [build(method, arch, sigma=sigma, teacher_arch=teacher or None, cfg=cfg, device=device, recipe=recipe)
                for method, teacher, recipe in full]
    g = full.index(("gaussian", "", ""))
    times: list[list[float]] = [[] for _ in prepared]
    for r in range(cap):
        order = [(i + r) % len(prepared) for i in range(len(prepared))]
        for i in order:
            times[i].append(prepared[i].time_batches(cfg.batches, clock))
        if enough_rounds(_ratios(times, g), least, cfg.target_half_width):
            break
    rows = []
    batch_ratios_of = _ratios(times, g)
    for i, p in enumerate(prepared):
        p.kernel_seconds_per_batch = kernel_seconds(p)
        row = p.row(times[i])
        batch_ratios = batch_ratios_of[i]
        per_epoch = row["batches_per_epoch"] / prepared_batches_per_epoch(prepared[g], cfg)
        median, low, high, coverage = median_interval(batch_ratios)
        row.update(interleaved=True, rounds=len(times[i]), rounds_max=cap,
                   ratio_target=float("nan") if cfg.target_half_width is None else cfg.target_half_width,
                   round_seconds=json.dumps(times[i]),
                   batch_ratio=median, batch_ratio_low=low, batch_ratio_high=high,
                   epoch_ratio=median * per_epoch, epoch_ratio_low=low * per_epoch, epoch_ratio_high=high * per_epoch,
                   ratio_level=coverage)
        rows.append(row)
    return rows


def _ratios(times: list[list[float]], g: int) -> list[list[float]]:
    """Per job, its per-round seconds over Gaussian's of the same round."""
    return [[t / tg for t, tg in zip(series, times[g])] for series in times]


def prepared_batches_per_epoch(p: PreparedProbe, cfg: ProbeConfig) -> int:
    return -(-cfg.train_images // p.batch)


__all__ = ["interleaved_rows", "median_interval", "median_interval_ranks", "relative_half_width", "settled",
           "enough_rounds"]
