"""The timing grid: probes for methods x architectures, each row stored as soon as it is measured.

Re-running skips probes the store already holds for the same (method, arch, teacher, sigma, device,
profile), so an interrupted grid continues where it stopped.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, replace
from pathlib import Path

import pandas as pd

from crt_bench.core.checks import check_choice, check_count
from crt_bench.core.console import progress, stderr_console
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.provenance import device_name, pick_device
from crt_bench.methods.registry import get_method, list_methods
from crt_bench.models.registry import generations, get_arch
from crt_bench.store.store import ResultsStore
from crt_bench.timing.probe import PAPER_PROBES, PROBES, PROTOCOLS, ProbeConfig
from crt_bench.timing.rounds import interleaved_rows

log = logging.getLogger(__name__)
TEACHERS = ("resnet20", "resnet110")  # the in-project teachers; also timed, for the paper's comparisons


def default_archs() -> list[str]:
    """The generation registry in release order, plus the teachers (ResNet-110 is the papers' network)."""
    return list(TEACHERS) + [s.name for s in generations()]


def grid(methods: list[str], archs: list[str], teachers: list[str]) -> list[tuple[str, str, str]]:
    jobs = []
    for arch in archs:
        for method in methods:
            if get_method(method).compose is not None:  # trained around a classifier of ``arch`` itself (denoised)
                jobs.append((method, arch, arch))
            elif get_method(method).needs_teacher:
                jobs += [(method, arch, t) for t in teachers]
            else:
                jobs.append((method, arch, ""))
    return jobs


PAPER_TABLE_METHODS = ["gaussian", "smoothadv", "macer", "smoothmix"]
"""What the CRT paper's Table 1 timed (against standard training, which the paper protocol adds itself)."""


def probe_config(profile: str, protocol: str = "engine") -> ProbeConfig:
    """The probe sizes of ``profile`` under ``protocol``; one clear error for a profile without probes."""
    cfg = PROBES[check_choice("profile", profile, PROBES, hint=" (the profiles with timing probes)")]
    return PAPER_PROBES.get(profile, cfg) if protocol == "paper" else cfg


def run_plan_timing(results: str | Path, *, profile: str, archs: list[str] | None, teachers: list[str],
                    paper_arch: str, device: str = "auto") -> None:
    """A reproduce plan's probes: every method on ``archs`` (the engine protocol: the slowdown table and
    Figure 1), then Table 1's methods on ``paper_arch`` inside their official scripts' loop (the paper
    protocol: the table's second section, beside the paper's figures)."""
    run_timing_grid(results, profile=profile, archs=archs, teachers=teachers, device=device)
    log.info(f"timing probes, paper protocol: {', '.join(PAPER_TABLE_METHODS)} and standard training on {paper_arch}")
    run_timing_grid(results, profile=profile, methods=list(PAPER_TABLE_METHODS), archs=[paper_arch], device=device,
                    protocol="paper")


def run_timing_grid(results: str | Path, *, profile: str = "cpu", methods: list[str] | None = None,
                    archs: list[str] | None = None, teachers: list[str] | None = None, sigma: float = 0.25,
                    batches: int | None = None, repeats: int | None = None, batch_size: int | None = None,
                    force: bool = False, device: str = "auto", protocol: str = "engine", precision: str | None = None,
                    sets: dict[str, dict[str, str]] | None = None) -> pd.DataFrame:
    """Time ``methods`` x ``archs``; ``protocol`` "engine" (the step alone) or "paper" (the official loop,
    :mod:`crt_bench.timing.paper`, with standard training at 150 x 256 and 200 x 128 as baselines), in
    ``precision`` (None: the protocol's own), with ``sets`` per method (``{"smoothadv": {"m": "4"}}``).
    Every input is checked before anything is timed."""
    cfg = replace(probe_config(profile, check_choice("timing protocol", protocol, PROTOCOLS)), protocol=protocol)
    if repeats is not None:
        check_count("repeats", repeats)  # at least these rounds; an adaptive profile's cap rises to them
        cfg = replace(cfg, repeats=repeats, max_repeats=max(repeats, cfg.max_repeats or 0))
    cfg = replace(cfg, batches=batches or cfg.batches, batch_size=batch_size or cfg.batch_size)
    check_count("batches", cfg.batches)
    if cfg.batch_size is not None:
        check_count("batch size", cfg.batch_size)
    methods = methods or [m.name for m in list_methods()]
    archs = archs or default_archs()
    teachers = teachers or ["resnet110"]
    for name in methods:
        get_method(name)
    for name in [*archs, *teachers]:
        get_arch(name)
    sets = sets or {}
    for name, overrides in sets.items():
        if name not in methods:
            raise CrtBenchError(f"--set {name}.KEY=VALUE names a method that is not timed here; timed: "
                                f"{', '.join(methods)}")
        get_method(name).make_hparams(overrides, sigma=sigma)  # a key the method lacks, a bad value
    cfg = replace(cfg, hparams=sets)
    dev = pick_device(device)
    cfg = cfg.with_precision(precision, dev)  # a precision the device cannot honour
    store = ResultsStore(results)
    done = set()
    if not force:
        have = store.read("timing")
        if not have.empty and "profile" in have:
            same = have[(have["device"] == device_name(dev)) & (have["profile"] == profile) & (have["sigma"] == sigma)]
            same = same[same.get("protocol", pd.Series("engine", index=same.index)).fillna("engine") == protocol]
            hp = same.get("hparams", pd.Series("", index=same.index)).fillna("")
            done = set(zip(same["method"], same["arch"], same["teacher_arch"], hp))
    paper_baselines = [("standard", "", ""), ("standard", "", "200x128")] if protocol == "paper" else []
    # An architecture's methods are timed together, interleaved (crt_bench.timing.rounds): all of them
    # again when any is missing, so that every ratio compares rounds of the same moment.
    per_arch = {arch: [(m, t, "") for m, a, t in grid(methods, archs, teachers) if a == arch] for arch in archs}
    per_arch = {arch: jobs + [b for b in paper_baselines if b not in jobs] for arch, jobs in per_arch.items()}

    def hparams_text(method: str) -> str:
        return str(asdict(get_method(method).make_hparams(sets.get(method), sigma=sigma)))

    todo = {arch: jobs for arch, jobs in per_arch.items()
            if any((m, arch, t, hparams_text(m)) not in done for m, t, _ in jobs)}
    if len(todo) < len(per_arch):
        log.info(f"skipping {len(per_arch) - len(todo)} architectures already timed (--force re-times)")
    rows = []
    with progress() as bar:
        task = bar.add_task("timing", total=len(todo))
        for arch, jobs in todo.items():
            bar.update(task, description=f"{arch}: {len(jobs)} methods, {cfg.rounds_text()} interleaved rounds")
            timed = interleaved_rows(arch, jobs, sigma=sigma, cfg=cfg, device=dev)
            asked = {(m, t) for m, t, _ in jobs} | ({("gaussian", "")} if protocol == "paper" else set())
            timed = [dict(row, profile=profile) for row in timed
                     if (row["method"], row["teacher_arch"]) in asked]  # gaussian only if asked for
            store.append("timing", timed)
            rows += timed
            bar.advance(task)
            if not stderr_console().is_terminal:  # a grid job's log (and the console following it): a line per step
                done_n = list(todo).index(arch) + 1
                log.info(f"timed {arch} ({done_n}/{len(todo)}): {len(timed)} methods, "
                         f"{timed[0]['rounds']} interleaved rounds")
    return pd.DataFrame(rows)
