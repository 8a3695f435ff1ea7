"""Consistency regularization (Jeong & Shin, "Consistency Regularization for Certified Robustness of
Smoothed Classifiers", NeurIPS 2020), Gaussian + Consistency variant.

Each minibatch of B/m clean images gets m independent noise draws delta_1..delta_m ~ N(0, sigma^2 I);
with z_i = f(x + delta_i) and the soft smoothed prediction p_hat = (1/m) sum_i softmax(z_i),

    loss = mean_{b,i} CE(z_i, y)
         + mean_b [ lbd * (1/m) sum_i KL(p_hat || softmax(z_i)) + eta * H(p_hat) ],

with H(p) = -sum_c p_c log max(p_c, 1e-20). As in the official code (jh-jeong/smoothing-consistency,
``code/consistency.py``, ``code/train_consistency.py``): p_hat is NOT detached, so the gradient also
flows through the KL's target (``F.kl_div(log_softmax(z_i), p_hat)`` summed over classes); the m noisy
copies go through the model in one forward; the loader batch is split into m minibatches, each with its
own optimizer step (m steps per loader batch, one forward+backward over B rows each). The official
scheduler is stepped *after* each epoch with ``scheduler.step(epoch)``, so each decay takes effect one
epoch later than its nominal milestone.

Out of scope: the SmoothAdv + Consistency variant (``--adv-training``, an attack on the m noisy copies
before the loss); only Gaussian + Consistency is registered here.

Per-sigma defaults are the CAT-RS config list (alinlab/smoothing-catrs EXPERIMENTS.MD): m = 2, eta = 0.5,
lbd = 20 (sigma 0.25), 10 (sigma 0.5), 10 (sigma 1.0).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from crt_bench.core.checks import check_count
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.lazy import lazy_module
from crt_bench.methods.common import mean_softmax, noisy_replicas, replicate
from crt_bench.methods.registry import Recipe, StepContext, nearest_sigma, register_method

if TYPE_CHECKING:  # the real modules for type checkers; at run time imported on first use (torch-free import)
    import torch.nn.functional as F
    from torch import Tensor, nn
else:
    F = lazy_module("torch.nn.functional")


# Jeong et al.'s repos call StepLR(step_size=50).step(epoch) AFTER epoch `epoch` (0-based), so lr is 0.1 for
# epochs 0-50, 0.01 for 51-100 and 0.001 for 101-149; our loop applies a milestone at the START of an epoch.
JEONG_MILESTONES = (51, 101)
JEONG_SCHEDULE = ("150 epochs, batch 256, lr 0.1, StepLR(50, 0.1) stepped after each epoch (-> milestones 51, 101), "
                  "plain momentum 0.9, wd 1e-4")
JEONG_RECIPE = Recipe(epochs=150, batch_size=256, lr=0.1, milestones=JEONG_MILESTONES, source=JEONG_SCHEDULE)
"""The recipe of Jeong et al.'s repositories (consistency, SmoothMix); each method names its own script."""
LBD_PER_SIGMA = {0.25: 20.0, 0.5: 10.0, 1.0: 10.0}  # CAT-RS list; other sigmas take the nearest entry


@dataclass
class ConsistencyHParams:
    """Defaults: the sigma = 0.25 entry of the CAT-RS list; ``for_sigma`` gives the others."""

    m: int = 2  # noise draws per image (= minibatches and optimizer steps per loader batch)
    lbd: float = 20.0  # weight of the KL consistency term
    eta: float = 0.5  # weight of the entropy term

    @classmethod
    def for_sigma(cls, sigma: float) -> ConsistencyHParams:
        return cls(lbd=nearest_sigma(LBD_PER_SIGMA, sigma))

    def validate(self) -> None:
        check_count("consistency: m (noise draws per image)", self.m)
        if self.lbd < 0:
            raise CrtBenchError(f"consistency: lbd (KL weight) must be >= 0, got {self.lbd}")
        if self.eta < 0:
            raise CrtBenchError(f"consistency: eta (entropy weight) must be >= 0, got {self.eta}")


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


@register_method(
    "consistency",
    hparams=ConsistencyHParams,
    recipe=replace(JEONG_RECIPE, source=f"jh-jeong/smoothing-consistency train_consistency.py: {JEONG_SCHEDULE}"),
    reference="Jeong, Shin. Consistency Regularization for Certified Robustness of Smoothed Classifiers. "
    "NeurIPS 2020",
    steps_per_batch=lambda hp: hp.m,
)
def consistency_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
    hp: ConsistencyHParams = ctx.hparams
    noisy = noisy_replicas(x, hp.m, ctx.sigma)  # [m*B, ...], noise-major
    logits = model(noisy)
    ce = F.cross_entropy(logits.float(), replicate(y, hp.m))
    return ce + consistency_regularizer(logits, hp.m, hp.lbd, hp.eta)
