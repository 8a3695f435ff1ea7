"""The end-to-end path on one machine: a Gaussian teacher, a CRT student, both certified, one table.

This is ``crt-bench reproduce``'s embedded default; the full paper grid builds on the same calls.
"""
from __future__ import annotations

from pathlib import Path

from rich.table import Table

from crt_bench.certify_run import certify_run
from crt_bench.config import get_profile, resolve_run_config
from crt_bench.report.summary import rich_summary, summary_table
from crt_bench.results import ResultsStore
from crt_bench.train import train_run


def gaussian_crt_pipeline(results: str | Path, *, profile: str = "smoke", teacher_arch: str = "resnet20",
                          student_arch: str = "convnext", sigma: float = 0.25, seed: int = 0,
                          data_dir: str | None = None, device: str = "auto", progress: bool = True) -> Table:
    store = ResultsStore(results)
    common = dict(profile=profile, sigma=sigma, seed=seed, data_dir=data_dir, device=device)
    teacher_cfg = resolve_run_config("gaussian", teacher_arch, **common)
    teacher = train_run(teacher_cfg, store, progress=progress)
    student_cfg = resolve_run_config("crt", student_arch, teacher=teacher, **common)
    student = train_run(student_cfg, store, progress=progress)
    ccfg = get_profile(profile).certify
    cert_ids = [certify_run(run, store, ccfg, data_dir=data_dir, device=device, seed=seed, progress=progress)[0]
                for run in (teacher, student)]
    df = summary_table(store)
    return rich_summary(df[df["cert_id"].isin(cert_ids)])
