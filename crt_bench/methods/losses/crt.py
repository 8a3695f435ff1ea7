"""The loss of ``crt`` (CRT); its hyper-parameters, recipe and registration are in
:mod:`crt_bench.methods.crt`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crt_bench.core.errors import CrtBenchError
from crt_bench.methods.crt import CRTHParams
from crt_bench.methods.losses.common import gaussian_noise
from crt_bench.methods.registry import StepContext


def transfer_distance(student: Tensor, teacher: Tensor, distance: str = "logit_l2") -> Tensor:
    """Batch mean of the per-image L2 distance between student and teacher outputs."""
    if distance == "softmax_l2":
        student, teacher = student.softmax(dim=1), teacher.softmax(dim=1)
    return torch.linalg.vector_norm(student.float() - teacher.float(), ord=2, dim=1).mean()


def crt_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
    if ctx.teacher is None:
        raise CrtBenchError("method 'crt' needs a teacher: pass --teacher RUN_ID or a checkpoint path")
    hp: CRTHParams = ctx.hparams
    noisy = gaussian_noise(x, ctx.sigma)
    with torch.no_grad():
        target = ctx.teacher(noisy)
    logits = model(noisy)
    loss = transfer_distance(logits, target, hp.distance)
    if hp.ce_weight > 0:
        loss = (1.0 - hp.ce_weight) * loss + hp.ce_weight * F.cross_entropy(logits, y)
    return loss
