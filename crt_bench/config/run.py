"""Run configuration: :class:`RunConfig` (profiles: :mod:`crt_bench.config.profiles`; resolution: :mod:`crt_bench.train.resolve`).

A run's settings come from three layers, later ones winning: the method's paper recipe
(``crt_bench.methods``), the profile (``crt-bench list profiles``), and explicit command-line flags.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from crt_bench.config.engine import EngineOptions


@dataclass
class RunConfig:
    """Everything that determines a training run; stored as JSON with the run."""

    method: str
    arch: str
    dataset: str
    profile: str
    sigma: float
    epochs: int
    batch_size: int
    lr: float
    milestones: tuple[int, ...]
    gamma: float
    momentum: float
    weight_decay: float
    seed: int = 0
    teacher: str | None = None  # a run id or a checkpoint path
    teacher_input_layer: str = "normalize"  # for reference checkpoints: "normalize" or "center" (Salman)
    teacher_dedicated: bool = False  # the teacher was trained only for this student: its hours count here
    job_key: str = ""  # set by the grid runner (crt_bench.grid.runner): finds this run again on re-runs
    hparams: dict[str, Any] = field(default_factory=dict)  # the method's hyper-parameters, resolved
    train_limit: int | None = None
    test_limit: int | None = None
    data_dir: str | None = None
    device: str = "auto"
    amp: bool = True  # bf16 autocast where the device computes bf16 natively (crt_bench.core.bf16)
    channels_last: bool | None = None  # NHWC student and batches; None: for conv nets (crt_bench.train.step)
    compile: bool = False  # torch.compile the student's forward
    teacher_precision: str = "auto"  # CRT teacher forward: auto (bf16 where native) | fp32 | bf16
    trace_steps: int = 0  # > 0: torch.profiler trace of this many steps of the first epoch (crt_bench.train.trace)
    epoch_scale: float | None = None  # the factor that made `epochs` from the recipe's; None: epochs given explicitly
    recipe_epochs: int = 0  # the method's recipe epochs (0: not recorded, rows written before the field existed)
    sync_bn: bool = False  # data-parallel runs: batch-norm statistics over the global batch (crt_bench.parallel.env)
    tf32: bool = False  # TF32 float32 matmuls/convolutions in training (Ampere+ GPUs; crt_bench.core.tf32); off: IEEE
    optimizer: str = "sgd"  # the recipe's: "sgd" (momentum) or "adam" (crt_bench.train.step.make_optimizer)

    def engine_options(self) -> EngineOptions:

        return EngineOptions(amp=self.amp, channels_last=self.channels_last, compile=self.compile,
                             teacher_precision=self.teacher_precision, tf32=self.tf32)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        data = json.loads(text)
        data["milestones"] = tuple(data["milestones"])
        if "profile_steps" in data:  # the field's name in configs stored before it was called trace_steps
            data.setdefault("trace_steps", data.pop("profile_steps"))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
