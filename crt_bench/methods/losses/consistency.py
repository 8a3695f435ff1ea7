"""The loss of ``consistency`` (Consistency regularization); its hyper-parameters, recipe and registration are in
:mod:`crt_bench.methods.consistency`."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from crt_bench.methods.consistency import ConsistencyHParams
from crt_bench.methods.losses.common import mean_softmax, noisy_replicas, replicate
from crt_bench.methods.registry import StepContext


def kl_div_sum(logits: Tensor, target: Tensor) -> Tensor:
    """KL(target || softmax(logits)) per row, summed over classes, in float32; ``[N]``.

    Same value as ``F.kl_div(log_softmax(logits), target, reduction="none").sum(1)`` (the official form)
    and the gradient also flows into ``target`` (which the methods do not detach). Unlike ``F.kl_div``,
    whose target-gradient log(t) + 1 is NaN at t == 0 (a class whose softmax underflows in every draw),
    log t is taken of max(t, 1e-20): identical gradients wherever t > 1e-20, finite everywhere.
    """
    target = target.float()
    return (target * (target.clamp_min(1e-20).log() - F.log_softmax(logits.float(), dim=1))).sum(dim=1)


def entropy(p: Tensor) -> Tensor:
    """H(p) = -sum_c p_c log max(p_c, 1e-20) per row; ``[N]``."""
    return -(p * p.clamp_min(1e-20).log()).sum(dim=1)


def consistency_regularizer(logits: Tensor, m: int, lbd: float, eta: float) -> Tensor:
    """mean_b [ lbd * (1/m) sum_i KL(p_hat || softmax(z_i)) + eta * H(p_hat) ] for noise-major logits ``[m*B, C]``.

    p_hat = mean_i softmax(z_i) keeps its gradient (not detached), as in the official code.
    """
    p_hat = mean_softmax(logits, m)  # [B, C]
    kl = kl_div_sum(logits, replicate(p_hat, m)).view(m, -1).mean(0)  # (1/m) sum_i KL_i, [B]
    return (lbd * kl + eta * entropy(p_hat)).mean()


def consistency_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
    hp: ConsistencyHParams = ctx.hparams
    noisy = noisy_replicas(x, hp.m, ctx.sigma)  # [m*B, ...], noise-major
    logits = model(noisy)
    ce = F.cross_entropy(logits.float(), replicate(y, hp.m))
    return ce + consistency_regularizer(logits, hp.m, hp.lbd, hp.eta)
