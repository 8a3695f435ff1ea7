"""The loss of ``smoothadv`` (SmoothAdv); its hyper-parameters, recipe and registration are in
:mod:`crt_bench.methods.smoothadv`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crt_bench.methods.losses.common import (add_replicated, frozen, noise_like_replicas, project_l2, replicate,
                                            smoothed_nll, unit_l2)
from crt_bench.methods.registry import StepContext
from crt_bench.methods.smoothadv import SmoothAdvHParams, warmup_epsilon


def ascent_direction(grad: Tensor) -> Tensor:
    """Each example's gradient scaled to unit L2 norm; an N(0, I) draw where the gradient is exactly 0."""
    norms = grad.flatten(1).norm(dim=1).view(-1, *([1] * (grad.dim() - 1)))
    return torch.where(norms > 0, unit_l2(grad), torch.randn_like(grad))


def pgd_l2_smoothed(model: nn.Module, x: Tensor, y: Tensor, noise: Tensor, eps: float, steps: int,
                    m: int) -> Tensor:
    """PGD-L2 on the soft smoothed classifier; returns delta (float32, shape of ``x``, no graph).

    ``noise`` holds the m draws per image in noise-major order (``noise_like_replicas(x, m, sigma)``);
    one delta per image is shared by its m noisy copies. The model is frozen for the attack (eval mode,
    no parameter gradients) and restored afterwards.
    """
    x = x.detach().float()
    step_size = 2.0 * eps / steps
    delta = torch.zeros_like(x)
    with frozen(model), torch.enable_grad():
        for _ in range(steps):
            delta.requires_grad_(True)
            logits = model(add_replicated(x + delta, noise))
            loss = (F.cross_entropy(logits.float(), y, reduction="sum") if m == 1
                    else smoothed_nll(logits, y, m, reduction="sum"))
            (grad,) = torch.autograd.grad(loss, delta)
            delta = delta.detach() + step_size * ascent_direction(grad)
            delta = (x + delta).clamp(0.0, 1.0) - x
            delta = project_l2(delta, eps)
    return delta.detach()


def smoothadv_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
    hp: SmoothAdvHParams = ctx.hparams
    m = hp.num_noise_vec
    noise = noise_like_replicas(x, m, ctx.sigma)
    eps = warmup_epsilon(hp.epsilon, ctx.epoch, hp.warmup)
    delta = pgd_l2_smoothed(model, x, y, noise, eps, hp.num_steps, m)
    logits = model(add_replicated(x + delta, noise))
    return F.cross_entropy(logits, replicate(y, m))
