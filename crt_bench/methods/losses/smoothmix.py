"""The loss of ``smoothmix`` (SmoothMix); its hyper-parameters, recipe and registration are in
:mod:`crt_bench.methods.smoothmix`."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crt_bench.methods.losses.common import (add_replicated, frozen, mean_softmax, noise_like_replicas, project_l2,
                                            replicate, smoothed_nll, unit_l2)
from crt_bench.methods.losses.consistency import kl_div_sum
from crt_bench.methods.registry import StepContext
from crt_bench.methods.smoothmix import SmoothMixHParams, warmup_factor


def _project(x_adv: Tensor, x: Tensor, radius: float | None) -> Tensor:
    """Onto the L2 ball of ``radius`` around ``x`` (none if ``radius`` is None), then into [0, 1]."""
    if radius is not None:
        x_adv = x + project_l2(x_adv - x, radius)
    return x_adv.clamp(0.0, 1.0)


def smoothmix_pgd(model: nn.Module, x: Tensor, y: Tensor, noises: Tensor, m: int, steps: int, alpha: float,
                  mix_step: int, maxnorm_s: float, maxnorm: float | None = None) -> tuple[Tensor, Tensor]:
    """SmoothMix's attack on the soft smoothed classifier; returns ``(x_init, adv_T)``, both float32, detached.

    ``noises`` is ``[m * B, ...]`` in noise-major order (``noise_like_replicas``), shared with the loss.
    ``maxnorm`` bounds every iterate around ``x`` (the official default None: unconstrained, only [0, 1]);
    ``maxnorm_s`` is the radius x_init is projected to. The model is frozen for the attack and its
    training mode and ``requires_grad`` flags are restored afterwards.
    """
    x = x.detach().float()
    adv, x_init = x, x
    with frozen(model), torch.enable_grad():
        for t in range(steps):
            if t == mix_step:
                x_init = adv
            adv = adv.clone().requires_grad_(True)
            loss = smoothed_nll(model(add_replicated(adv, noises)), y, m, reduction="sum")
            (grad,) = torch.autograd.grad(loss, [adv])
            adv = _project(adv.detach() + alpha * unit_l2(grad.float()), x, maxnorm)
    return _project(x_init, x, maxnorm_s).detach(), adv.detach()


def mix(x_init: Tensor, adv: Tensor, p_hat: Tensor, lam: Tensor, num_classes: int) -> tuple[Tensor, Tensor]:
    """x_mix = (1 - lam) x_init + lam adv;  y_mix = (1 - lam) p_hat + lam / C  (lam: one per example, ``[B]``)."""
    lam_x = lam.view(-1, *([1] * (x_init.dim() - 1)))
    lam_y = lam.view(-1, 1)
    x_mix = (1 - lam_x) * x_init + lam_x * adv
    y_mix = (1 - lam_y) * p_hat + lam_y / num_classes
    return x_mix, y_mix


def mix_kl(logits_mix: Tensor, y_mix: Tensor, p_hat: Tensor, y: Tensor, m: int) -> Tensor:
    """L_mix = mean over the m*B noise-major rows of 1[argmax p_hat == y] * KL(y_mix || softmax(logits_mix))."""
    correct = (p_hat.detach().argmax(dim=1) == y).float()  # [B]
    kl = kl_div_sum(logits_mix, replicate(y_mix, m))  # [m*B]
    return (replicate(correct, m) * kl).mean()


def smoothmix_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
    hp: SmoothMixHParams = ctx.hparams
    w = warmup_factor(ctx.epoch, hp.warmup)
    noises = noise_like_replicas(x, hp.m, ctx.sigma)
    x_init, adv = smoothmix_pgd(model, x, y, noises, hp.m, hp.steps, hp.alpha, hp.mix_step,
                                maxnorm_s=hp.alpha * hp.mix_step * w)
    logits = model(add_replicated(x_init, noises))
    ce = F.cross_entropy(logits.float(), replicate(y, hp.m))
    p_hat = mean_softmax(logits, hp.m)  # not detached: y_mix carries its gradient
    lam = torch.rand(x.shape[0], device=x.device) / 2
    x_mix, y_mix = mix(x_init, adv, p_hat, lam, num_classes=logits.shape[1])
    logits_mix = model(add_replicated(x_mix, noises))
    return ce + hp.eta * w * mix_kl(logits_mix, y_mix, p_hat, y, hp.m)
