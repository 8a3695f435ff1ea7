"""Options of the training step engine (precision, compile, channels-last, TF32, ...)."""
from __future__ import annotations

from dataclasses import dataclass

from crt_bench.config.choices import check_teacher_precision


@dataclass
class EngineOptions:
    amp: bool = True  # bf16 autocast of the step on CUDA and native-bf16 CPUs (crt_bench.core.bf16)
    channels_last: bool | None = None  # None: for convolutional models
    compile: bool = False  # torch.compile the student's forward
    teacher_precision: str = "auto"  # auto | fp32 | bf16 (auto: bf16 where the device has native bf16)
    fold_teacher: bool = True  # fold the teacher's batch norms into its convolutions
    tf32: bool = False  # TF32 float32 matmuls and convolutions in the step (Ampere+ GPUs; crt_bench.core.tf32)

    def validate(self) -> None:
        check_teacher_precision(self.teacher_precision)
