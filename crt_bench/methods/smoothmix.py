"""SmoothMix (Jeong, Park, Kim, Lee, Shin, "SmoothMix: Training Confidence-calibrated Smoothed Classifiers
for Certified Robustness", NeurIPS 2021).

Each minibatch of B/m clean images x (labels y) gets m noise draws delta_1..delta_m ~ N(0, sigma^2 I),
shared by the attack and the loss. With w = min(1, (epoch + 1) / warmup):

1. Attack the soft smoothed classifier (model frozen: eval mode, no parameter gradients), no random start:
       adv_0 = x;  adv_{t+1} = clip_[0,1]( adv_t + alpha * g_t / (||g_t||_2 + 1e-8) ),
       g_t = grad_adv sum_b -log max(mean_i softmax(f(adv_t + delta_i))_y, 1e-20),
   for t = 0..T-1; x_init = adv_{mix_step} projected onto the L2 ball of radius alpha * mix_step * w
   around x (mix_step = 0: x_init = x; mix_step = 1: the "one-step adversary").
2. "Clean" side: z_i = f(x_init + delta_i); L_CE = mean_{b,i} CE(z_i, y);
   p_hat = mean_i softmax(z_i) (NOT detached).
3. Mixup toward the adversary, per example lambda ~ U[0, 1/2]:
       x_mix = (1 - lambda) x_init + lambda adv_T,   y_mix = (1 - lambda) p_hat + lambda * (1/C) 1.
4. L_mix = mean_{b,i} 1[argmax p_hat == y] * KL(y_mix || softmax f(x_mix + delta_i)).
5. loss = L_CE + eta * w * L_mix; one optimizer step per minibatch (m per loader batch).

This is what the official code (jh-jeong/smoothmix ``code/train.py``: ``train``, ``_mixup_data``,
``SmoothMix_PGD.attack``) does, including two points a paraphrase can miss: the cross-entropy and p_hat
are computed on x_init + delta_i (the code rebinds ``inputs`` to the attack's x_init, so the "clean" side
is the one-step adversary when mix_step = 1), and the KL target y_mix is not detached. The clean and the
mixed rows go through the model in two separate forwards (separate BatchNorm statistics), as there.
Cost per loader batch of B images: m x [T attack passes (forward + input-gradient backward) over
m * B/m = B rows + forward+backward over 2B rows] = m(T + 2) passes over B rows; m optimizer steps.

One departure in how the attack is launched, not in what it computes: each attack step here runs **one**
forward (and one input-gradient backward) over the m noisy copies stacked into B rows, where the official
``SmoothMix_PGD.attack`` runs m forwards of B/m rows each (one per noise draw) and sums. The arithmetic is
the same (the model is in eval mode, so BatchNorm uses its running statistics and rows do not interact),
and so are the gradients; there are m times fewer kernel launches per step, which makes SmoothMix cheaper
than the official code on a launch-bound GPU (a small ratio to Gaussian there), and changes nothing on a
compute-bound device or a CPU.

Per-sigma defaults: the CAT-RS config list (alinlab/smoothing-catrs EXPERIMENTS.MD; SmoothMix
EXPERIMENTS.MD): m = 2, T = 4, eta = 5, warmup 10; alpha 0.5 / 1.0 / 2.0 and mix_step 0 / 1 / 1 for
sigma 0.25 / 0.5 / 1.0. Schedule as Consistency's (StepLR(50) stepped after each epoch: milestones 51, 101).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from crt_bench.core.checks import check_count, check_positive
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.lazy import lazy_module
from crt_bench.methods.common import (add_replicated, frozen, mean_softmax, noise_like_replicas, project_l2, replicate,
                                      smoothed_nll, unit_l2)
from crt_bench.methods.consistency import JEONG_RECIPE, JEONG_SCHEDULE, kl_div_sum
from crt_bench.methods.registry import StepContext, nearest_sigma, register_method

if TYPE_CHECKING:  # the real modules for type checkers; at run time imported on first use (torch-free import)
    import torch
    import torch.nn.functional as F
    from torch import Tensor, nn
else:
    torch = lazy_module("torch")
    F = lazy_module("torch.nn.functional")


# CAT-RS list (m = 2, T = 4, eta = 5 at every sigma); other sigmas take the nearest entry.
PER_SIGMA = {0.25: {"alpha": 0.5, "mix_step": 0}, 0.5: {"alpha": 1.0, "mix_step": 1},
             1.0: {"alpha": 2.0, "mix_step": 1}}


def warmup_factor(epoch: int, warmup: int) -> float:
    """w(epoch) = min(1, (epoch + 1) / warmup), epoch 0-based."""
    return min(1.0, (epoch + 1) / warmup)


@dataclass
class SmoothMixHParams:
    """Defaults: the sigma = 0.25 entry of the CAT-RS list; ``for_sigma`` gives the others."""

    m: int = 2  # noise draws per image (= minibatches and optimizer steps per loader batch)
    steps: int = 4  # T, attack steps
    alpha: float = 0.5  # attack step size (L2, pixel units)
    eta: float = 5.0  # weight of the mixup loss
    mix_step: int = 0  # attack iterate used as x_init (0: clean x, 1: one-step adversary)
    warmup: int = 10  # epochs over which eta and the x_init radius ramp up linearly

    @classmethod
    def for_sigma(cls, sigma: float) -> SmoothMixHParams:
        return cls(**nearest_sigma(PER_SIGMA, sigma))

    def validate(self) -> None:
        check_count("smoothmix: m (noise draws per image)", self.m)
        check_count("smoothmix: steps (attack steps T)", self.steps)
        check_positive("smoothmix: alpha (attack step size)", self.alpha)
        if self.eta < 0:
            raise CrtBenchError(f"smoothmix: eta (mixup loss weight) must be >= 0, got {self.eta}")
        if not 0 <= self.mix_step < self.steps:
            raise CrtBenchError(f"smoothmix: mix_step must lie in [0, steps) = [0, {self.steps}), got {self.mix_step}")
        check_count("smoothmix: warmup (epochs)", self.warmup)


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


@register_method(
    "smoothmix",
    hparams=SmoothMixHParams,
    recipe=replace(JEONG_RECIPE, source=f"jh-jeong/smoothmix train.py: {JEONG_SCHEDULE}"),
    reference="Jeong, Park, Kim, Lee, Shin. SmoothMix: Training Confidence-calibrated Smoothed Classifiers for "
    "Certified Robustness. NeurIPS 2021",
    steps_per_batch=lambda hp: hp.m,
)
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
