"""Gaussian noise training (Cohen, Rosenfeld & Kolter, ICML 2019): cross-entropy on x + N(0, sigma^2 I).

The baseline every slowdown in crt-bench is relative to. Recipe: the one later papers (Salman et al.,
Jeong et al.) train their Gaussian ResNet-110 baselines with: 150 epochs, batch 256, lr 0.1 decayed
x0.1 every 50 epochs, momentum 0.9, weight decay 1e-4.
"""
from __future__ import annotations

from dataclasses import dataclass

from crt_bench.methods.registry import Recipe, register_method

RECIPE = Recipe(epochs=150, batch_size=256, lr=0.1, milestones=(50, 100),
                source="Salman et al. 2019 / Jeong et al. re-runs of Cohen et al. (train_cohen.py)")

@dataclass
class GaussianHParams:
    """No hyper-parameters beyond sigma."""


register_method(
    "gaussian",
    loss="crt_bench.methods.losses.gaussian:gaussian_loss",
    hparams=GaussianHParams,
    recipe=RECIPE,
    reference="Cohen, Rosenfeld, Kolter. Certified Adversarial Robustness via Randomized Smoothing. ICML 2019",
)
