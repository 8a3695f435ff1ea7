"""The losses of ``denoised`` (denoised smoothing); its hyper-parameters, recipe and registration are in
:mod:`crt_bench.methods.denoised`. ``model`` is a :class:`~crt_bench.models.denoiser.DenoisedClassifier`
(possibly compiled), the frozen classifier inside it; ``ctx.teacher`` is the same classifier, frozen and
folded, for the stability target.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from crt_bench.core.errors import CrtBenchError
from crt_bench.methods.denoised import DenoisedHParams
from crt_bench.methods.losses.common import gaussian_noise
from crt_bench.methods.registry import StepContext


def denoiser_of(model: nn.Module) -> nn.Module:
    """The denoiser of a denoised classifier, also under torch.compile (``_orig_mod``)."""
    inner = getattr(model, "_orig_mod", model)
    inner = getattr(inner, "module", inner)  # DistributedDataParallel
    denoiser = getattr(inner, "denoiser", None)
    if not isinstance(denoiser, nn.Module):
        raise CrtBenchError(f"method 'denoised' trains a denoiser in front of a classifier, got a {type(inner).__name__}")
    return denoiser


def mse_loss(model: nn.Module, noisy: Tensor, clean: Tensor) -> Tensor:
    """Mean over pixels of (D(x + eta) - x)^2: the denoiser alone, the classifier unused."""
    return F.mse_loss(denoiser_of(model)(noisy).float(), clean.float())


def stability_loss(model: nn.Module, x: Tensor, ctx: StepContext) -> Tensor:
    """CE(f(D(x + eta)), argmax f(x)): the denoised noisy input must keep the classifier's clean prediction."""
    if ctx.teacher is None:
        raise CrtBenchError("method 'denoised' needs its classifier: pass --teacher RUN_ID (e.g. a standard run)")
    with torch.no_grad():
        target = ctx.teacher(x).argmax(dim=1)
    return F.cross_entropy(model(gaussian_noise(x, ctx.sigma)).float(), target)


def denoised_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
    hp: DenoisedHParams = ctx.hparams
    if hp.variant == "stability":
        return stability_loss(model, x, ctx)
    return mse_loss(model, gaussian_noise(x, ctx.sigma), x)
