"""MACER, MAximizing the CErtified Radius (Zhai et al., ICLR 2020): attack-free robust training.

On a minibatch of B clean images, each image gets k Gaussian copies x + eta_j, eta_j ~ N(0, sigma^2 I),
and the base model's logits z_bj on all B*k rows (one forward, one backward). Then

    CL    = sum_b  -log( (1/k) sum_j softmax(z_bj)[y_b] + 1e-10 )        soft smoothed classifier's NLL
    p_b   = (1/k) sum_j softmax(beta * z_bj)                             inverse-temperature soft classifier
    p1, p2, c1 = top-2 probabilities of p_b and the top class
    xi_b  = Phi^-1(p1) - Phi^-1(p2)                                       surrogate radius (x 2/sigma)
    RL    = (sigma / 2) * sum_{b in G} (gamma - xi_b),  G = {b : c1 == y_b, xi_b finite, 0 <= xi_b <= gamma}
    loss  = (CL + lambda * RL) / B

i.e. a hinge on the (soft, differentiable) certified radius sigma/2 * xi of the correctly classified
examples, with no attack. Defaults k=16, lambda=12, gamma=8, beta=16 are the argparse defaults of the
official code (RuntianZ/macer ``main.py``/``macer.py: macer_train``), which trains with SGD (momentum 0.9,
weight decay 5e-4, lr 0.01, batch 64) for 440 epochs.

Numerics, as the official code: Phi^-1 is evaluated in float32 (``torch.special.ndtri`` here,
``Normal(0, 1).icdf`` there). With beta = 16 the top probability of a confident example rounds to 1.0 (or
the runner-up underflows to 0.0), Phi^-1 gives +inf (-inf), xi is inf, and the example fails the
finite-and-|xi|<=gamma mask: it is silently dropped from RL and only the CL term trains it, so RL acts on
the not-yet-saturated correct examples only. (p1 rounds to 1.0 only when 1 - p1 < ~6e-8, i.e. when the
exact xi >= 2 Phi^-1(1 - 6e-8) ~ 10.6; for any gamma below that, the default 8 included, the dropped
examples lie outside the hinge anyway and the drop changes nothing.) The official code drops them by
boolean indexing; here the mask is applied with ``torch.where`` (no host sync), and Phi^-1 is
re-evaluated on a safe value (0.5) in the dropped entries so that their +-inf never reaches the backward
pass (where(mask, inf, 0) would back-propagate 0 * inf = nan). CL adds 1e-10 inside the log (no clamp),
as the official code does.

Deferred variant (``deferred=True``, from Jeong et al.'s re-implementation ``train_macer.py --deferred``):
lambda = 0 until the first learning-rate decay, then the full loss. The decay epoch is derived from this
method's recipe milestones scaled to the run's length exactly as ``crt_bench.train.resolve.resolve_run_config``
scales them (``scaled_milestones``), so it is the epoch at which our loop actually drops the lr; a run
too short to keep any milestone never leaves the deferred phase (lambda = 0 throughout).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from crt_bench.config.schedule import scaled_milestones
from crt_bench.core.checks import check_count, check_positive
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.lazy import lazy_module
from crt_bench.methods.common import mean_softmax, noisy_replicas
from crt_bench.methods.registry import Recipe, StepContext, register_method

if TYPE_CHECKING:  # the real modules for type checkers; at run time imported on first use (torch-free import)
    import torch
    import torch.nn.functional as F
    from torch import Tensor, nn
else:
    torch = lazy_module("torch")
    F = lazy_module("torch.nn.functional")


# MACER main.py: MultiStepLR(milestones=[200, 400], gamma=0.1) with scheduler.step() at the START of each
# 1-indexed epoch e (so the scheduler's counter equals e while epoch e trains): lr 0.01 for epochs 1-199,
# 1e-3 for 200-399, 1e-4 for 400-440. In our 0-based epochs that is a decay at the start of epochs 199 and
# 399: milestones (199, 399), one less than the official numbers (no extra post-epoch delay here).
RECIPE = Recipe(epochs=440, batch_size=64, lr=0.01, milestones=(199, 399), gamma=0.1, momentum=0.9,
                weight_decay=5e-4, source="MACER official code (RuntianZ/macer main.py defaults)")


@dataclass
class MACERHParams:
    """MACER's hyper-parameters; the defaults are the official ``main.py`` argparse values.

    Per-sigma defaults (:meth:`for_sigma`): the official repo has one setting for every sigma (lambda=12,
    not deferred) and its README trains sigma=0.25 with it; the MACER paper's per-sigma lambdas are not
    verified against a released setting. Where MACER gives no sigma-specific value we take Jeong et al.'s
    re-implementation (smoothing-consistency ``train_macer.py``): sigma 0.5 -> lambda 6, sigma 1.0 ->
    lambda 12 deferred. ``--set lbd=12 --set deferred=false`` restores the official repo's single default.
    """

    k: int = 16  # gauss_num: noisy copies per image
    lbd: float = 12.0  # lambda: weight of the robustness (hinge) loss
    gamma: float = 8.0  # hinge: only surrogate radii xi <= gamma are pushed up
    beta: float = 16.0  # inverse temperature of the softmax in the robustness term
    deferred: bool = False  # lambda = 0 until the first lr decay (Jeong et al.'s --deferred)

    @classmethod
    def for_sigma(cls, sigma: float) -> MACERHParams:
        if abs(sigma - 0.5) < 1e-9:
            return cls(lbd=6.0)
        if abs(sigma - 1.0) < 1e-9:
            return cls(lbd=12.0, deferred=True)
        return cls()  # sigma 0.25 (MACER's README example) and any other sigma: the official defaults

    def validate(self) -> None:
        check_count("k (noisy copies per image, MACER's gauss_num)", self.k)
        if not self.lbd >= 0:
            raise CrtBenchError(f"lbd (weight of the robustness loss) must be >= 0, got {self.lbd}")
        check_positive("gamma (hinge on the surrogate radius)", self.gamma)
        check_positive("beta (inverse softmax temperature)", self.beta)


def first_decay_epoch(epochs: int) -> int:
    """0-based epoch of the first lr decay of a run of ``epochs`` epochs (``epochs`` if none happens)."""
    milestones = scaled_milestones(RECIPE.milestones, RECIPE.epochs, epochs)
    return milestones[0] if milestones else epochs


def macer_hinge(logits: Tensor, y: Tensor, k: int, gamma: float, beta: float) -> Tensor:
    """Per-example hinge ``gamma - xi`` on the kept examples, 0 elsewhere: shape ``[B]``, float32.

    ``logits`` are the ``[k * B, C]`` outputs on noise-major rows (see ``methods.common``). Kept: top class
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


@register_method(
    "macer",
    hparams=MACERHParams,
    recipe=RECIPE,
    reference="Zhai, Dan, He, Zhang, Gong, Ravikumar, Hsieh, Wang. MACER: Attack-free and Scalable Robust "
    "Training via Maximizing Certified Radius. ICLR 2020",
    steps_per_batch=lambda hp: 1,
)
def macer_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
    hp: MACERHParams = ctx.hparams
    noisy = noisy_replicas(x, hp.k, ctx.sigma)
    logits = model(noisy)
    deferring = hp.deferred and ctx.epoch < first_decay_epoch(ctx.epochs)  # python ints: no host sync
    lbd = 0.0 if deferring else hp.lbd
    return macer_loss_from_logits(logits, y, hp.k, ctx.sigma, lbd, hp.gamma, hp.beta)
