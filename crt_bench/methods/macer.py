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

from crt_bench.config.schedule import scaled_milestones
from crt_bench.core.checks import check_count, check_positive
from crt_bench.core.errors import CrtBenchError
from crt_bench.methods.registry import Recipe, register_method


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


register_method(
    "macer",
    loss="crt_bench.methods.losses.macer:macer_loss",
    hparams=MACERHParams,
    recipe=RECIPE,
    reference="Zhai, Dan, He, Zhang, Gong, Ravikumar, Hsieh, Wang. MACER: Attack-free and Scalable Robust "
    "Training via Maximizing Certified Radius. ICLR 2020",
    steps_per_batch=lambda hp: 1,
)
