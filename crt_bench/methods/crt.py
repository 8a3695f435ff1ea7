"""CRT, Certified Robustness Transfer (Vaishnavi, Eykholt, Rahmati, NeurIPS 2022).

The student matches a certifiably robust teacher on the same noisy input:

    loss = mean_x || z_student(x + eta) - z_teacher(x + eta) ||_2,   eta ~ N(0, sigma^2 I),

one noise draw per image per step, on raw logits, the norm unsquared, the teacher frozen (eval mode,
no gradient). This is the objective of the official code; ``ce_weight`` mixes in cross-entropy as
``(1 - ce_weight) * transfer + ce_weight * CE`` (0 in every shipped config). ``distance="softmax_l2"``
measures the distance between softmax outputs instead, as some third-party summaries describe it.
"""
from __future__ import annotations

from dataclasses import dataclass

from crt_bench.core.errors import CrtBenchError
from crt_bench.methods.registry import Recipe, register_method


DISTANCES = ("logit_l2", "softmax_l2")


@dataclass
class CRTHParams:
    ce_weight: float = 0.0
    distance: str = "logit_l2"

    def validate(self) -> None:
        if not 0.0 <= self.ce_weight <= 1.0:
            raise CrtBenchError(f"ce_weight must lie in [0, 1], got {self.ce_weight}")
        if self.distance not in DISTANCES:
            raise CrtBenchError(f"distance must be one of {', '.join(DISTANCES)}, got {self.distance!r}")


register_method(
    "crt",
    loss="crt_bench.methods.losses.crt:crt_loss",
    hparams=CRTHParams,
    recipe=Recipe(epochs=200, batch_size=128, lr=0.1, milestones=(100, 150),
                  source="CRT official code (Ethos-lab/crt-neurips22), CIFAR-10 config"),
    reference="Vaishnavi, Eykholt, Rahmati. Accelerating Certified Robustness Training via Knowledge "
    "Transfer. NeurIPS 2022",
    needs_teacher=True,
)
