"""Standard training: cross-entropy on clean images, no noise (the off-the-shelf classifier that
denoised smoothing puts a denoiser in front of). The run's sigma only sets its per-epoch noisy test
accuracy. Recipe: the Gaussian baseline's (150 epochs, batch 256, lr 0.1 x0.1 at 50 and 100).
"""
from __future__ import annotations

from dataclasses import dataclass

from crt_bench.methods.gaussian import RECIPE
from crt_bench.methods.registry import register_method


@dataclass
class StandardHParams:
    """No hyper-parameters."""


register_method(
    "standard",
    loss="crt_bench.methods.losses.standard:standard_loss",
    hparams=StandardHParams,
    recipe=RECIPE,
    reference="Noise-free cross-entropy training (the base classifiers of Salman et al., NeurIPS 2020)",
)
