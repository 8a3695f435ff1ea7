"""The loss of ``macer`` (MACER); its hyper-parameters, recipe and registration are in
:mod:`crt_bench.methods.macer`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crt_bench.methods.losses.common import mean_softmax, noisy_replicas
from crt_bench.methods.macer import MACERHParams, first_decay_epoch
from crt_bench.methods.registry import StepContext


def macer_hinge(logits: Tensor, y: Tensor, k: int, gamma: float, beta: float) -> Tensor:
    """Per-example hinge ``gamma - xi`` on the kept examples, 0 elsewhere: shape ``[B]``, float32.

    ``logits`` are the ``[k * B, C]`` outputs on noise-major rows (see ``losses.common``). Kept: top class
    of the beta-softmax smoothed classifier is ``y`` and ``xi = ndtri(p1) - ndtri(p2)`` is finite with
    ``0 <= xi <= gamma``. Saturated examples (p1 == 1.0 or p2 == 0.0 in float32, xi = inf) are dropped.
    """
    probs = mean_softmax(logits.float() * beta, k)  # [B, C], float32
    top, classes = probs.topk(2, dim=1)
    p1, p2 = top[:, 0], top[:, 1]
    with torch.no_grad():
        xi_raw = torch.special.ndtri(p1) - torch.special.ndtri(p2)
        keep = (classes[:, 0] == y) & torch.isfinite(xi_raw) & (xi_raw >= 0) & (xi_raw <= gamma)
    half = torch.full_like(p1, 0.5)  # ndtri(0.5) = 0: a finite value with a finite derivative
    xi = torch.special.ndtri(torch.where(keep, p1, half)) - torch.special.ndtri(torch.where(keep, p2, half))
    return torch.where(keep, gamma - xi, torch.zeros_like(xi))


def macer_loss_from_logits(
    logits: Tensor, y: Tensor, k: int, sigma: float, lbd: float, gamma: float, beta: float
) -> Tensor:
    """MACER's loss ``(CL + lbd * RL) / B`` from the ``[k * B, C]`` noise-major logits of B images."""
    smoothed = mean_softmax(logits, k)  # float32, [B, C]
    cl = F.nll_loss(torch.log(smoothed + 1e-10), y, reduction="sum")
    rl = macer_hinge(logits, y, k, gamma, beta).sum() * (sigma / 2)
    return (cl + lbd * rl) / y.shape[0]


def macer_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
    hp: MACERHParams = ctx.hparams
    noisy = noisy_replicas(x, hp.k, ctx.sigma)
    logits = model(noisy)
    deferring = hp.deferred and ctx.epoch < first_decay_epoch(ctx.epochs)  # python ints: no host sync
    lbd = 0.0 if deferring else hp.lbd
    return macer_loss_from_logits(logits, y, hp.k, ctx.sigma, lbd, hp.gamma, hp.beta)
