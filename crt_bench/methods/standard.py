"""Standard training: cross-entropy on clean images, no noise (the off-the-shelf classifier that
denoised smoothing puts a denoiser in front of). The run's sigma only sets its per-epoch noisy test
accuracy. Recipe: the Gaussian baseline's (150 epochs, batch 256, lr 0.1 x0.1 at 50 and 100).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from crt_bench.core.lazy import lazy_module
from crt_bench.methods.gaussian import RECIPE
from crt_bench.methods.registry import StepContext, register_method

if TYPE_CHECKING:  # the real modules for type checkers; at run time imported on first use (torch-free import)
    import torch.nn.functional as F
    from torch import Tensor, nn
else:
    F = lazy_module("torch.nn.functional")


@dataclass
class StandardHParams:
    """No hyper-parameters."""


@register_method(
    "standard",
    hparams=StandardHParams,
    recipe=RECIPE,
    reference="Noise-free cross-entropy training (the base classifiers of Salman et al., NeurIPS 2020)",
)
def standard_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
    return F.cross_entropy(model(x), y)
