"""The proxy-teacher workflow, built from the same calls a user makes one by one.

* ``proxy_teacher_workflow``: the paper's Table 1 recipe when no robust teacher exists: train a small
  proxy teacher with a certified-training method (SmoothMix ResNet-20), then the student with CRT; the
  student's run records the teacher's hours and counts them in its total cost.
"""
from __future__ import annotations

from pathlib import Path

from crt_bench.store.store import ResultsStore
from crt_bench.train.resolve import resolve_run_config
from crt_bench.train.trainer import train_run


def proxy_teacher_workflow(results: str | Path, *, student_arch: str = "resnet110", teacher_arch: str = "resnet20",
                           teacher_method: str = "smoothmix", profile: str = "smoke", sigma: float = 0.25,
                           seed: int = 0, dataset: str | None = None, data_dir: str | None = None,
                           device: str = "auto", teacher_hparams: dict[str, str] | None = None,
                           epochs: int | None = None, progress: bool = True) -> tuple[str, str]:
    """Train the proxy teacher, then the CRT student linked to it; returns (teacher_run, student_run)."""
    store = ResultsStore(results)
    common = dict(profile=profile, sigma=sigma, seed=seed, dataset=dataset, data_dir=data_dir, device=device,
                  epochs=epochs)
    teacher_cfg = resolve_run_config(teacher_method, teacher_arch, hparams=teacher_hparams, **common)
    student_cfg_check = resolve_run_config("crt", student_arch, teacher="(proxy)", **common)  # fail before training
    del student_cfg_check
    teacher = train_run(teacher_cfg, store, progress=progress)
    student_cfg = resolve_run_config("crt", student_arch, teacher=teacher, teacher_dedicated=True, **common)
    student = train_run(student_cfg, store, progress=progress)
    return teacher, student
