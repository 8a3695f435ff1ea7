"""Gaussian noise training (Cohen, Rosenfeld & Kolter, ICML 2019): cross-entropy on x + N(0, sigma^2 I).

The baseline every slowdown in crt-bench is relative to. Recipe: the one later papers (Salman et al.,
Jeong et al.) train their Gaussian ResNet-110 baselines with: 150 epochs, batch 256, lr 0.1 decayed
x0.1 every 50 epochs, momentum 0.9, weight decay 1e-4.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from crt_bench.core.lazy import lazy_module
from crt_bench.methods.common import gaussian_noise
from crt_bench.methods.registry import Recipe, StepContext, register_method

if TYPE_CHECKING:  # the real modules for type checkers; at run time imported on first use (torch-free import)
    import torch.nn.functional as F
    from torch import Tensor, nn
else:
    F = lazy_module("torch.nn.functional")

RECIPE = Recipe(epochs=150, batch_size=256, lr=0.1, milestones=(50, 100),
                source="Salman et al. 2019 / Jeong et al. re-runs of Cohen et al. (train_cohen.py)")


@dataclass
class GaussianHParams:
    """No hyper-parameters beyond sigma."""


@register_method(
    "gaussian",
    hparams=GaussianHParams,
    recipe=RECIPE,
    reference="Cohen, Rosenfeld, Kolter. Certified Adversarial Robustness via Randomized Smoothing. ICML 2019",
)
def gaussian_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
    return F.cross_entropy(model(gaussian_noise(x, ctx.sigma)), y)
