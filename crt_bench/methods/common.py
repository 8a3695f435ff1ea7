"""Building blocks shared by the methods' losses (Gaussian noise; for SmoothAdv, MACER, SmoothMix,
Consistency: noisy replicas, the soft smoothed classifier, and running an attack on a frozen model.
torch is imported on first use (:mod:`crt_bench.core.lazy`): the method modules import this one torch-free.

Row order convention for m noisy copies of a batch of B images: **noise-major**, i.e. rows
``[i * B, (i + 1) * B)`` hold noise draw ``i`` of every image, so ``logits.view(m, B, C)`` separates
the draws and ``.mean(0)`` averages over them.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Iterator

from crt_bench.core.lazy import lazy_module

if TYPE_CHECKING:  # the real modules for type checkers; at run time imported on first use (torch-free import)
    import torch
    import torch.nn.functional as F
    from torch import Tensor, nn

    from crt_bench.parallel import noise as parallel_noise
else:
    torch = lazy_module("torch")
    F = lazy_module("torch.nn.functional")
    parallel_noise = lazy_module("crt_bench.parallel.noise")


def gaussian_noise(x: Tensor, sigma: float) -> Tensor:
    """x + N(0, sigma^2 I), one fresh draw per image, sampled in float32 in pixel space.

    Built in the draw's own buffer (scaled, then ``x`` added in place): one tensor, no temporaries,
    the same values as ``x + noise * sigma``.
    """
    # = torch.randn_like(x) (x's memory format), or this rank's rows (crt_bench.parallel.noise)
    return parallel_noise.standard_normal_like(x).mul_(sigma).add_(x)


def noise_like_replicas(x: Tensor, m: int, sigma: float) -> Tensor:
    """``m`` independent N(0, sigma^2 I) draws for each image: shape ``[m * B, *x.shape[1:]]``, float32."""
    return parallel_noise.standard_normal_replicas(x, m).mul_(sigma)  # a fresh buffer, scaled in place; under DDP: this rank's rows of the global draw


def add_replicated(x: Tensor, noise: Tensor) -> Tensor:
    """``replicate(x, m) + noise`` for noise-major ``noise`` of ``[m * B, ...]``, without the replicas' copy.

    ``x`` is broadcast over the ``m`` draws (one kernel); values and gradients equal the two-step form.
    """
    m = noise.shape[0] // x.shape[0]
    return (noise.view(m, *x.shape) + x).reshape(noise.shape)


def noisy_replicas(x: Tensor, m: int, sigma: float) -> Tensor:
    """``replicate(x, m) + noise_like_replicas(x, m, sigma)`` in the draw's own buffer (scaled, shifted in place)."""
    noise = noise_like_replicas(x, m, sigma)
    noise.view(m, *x.shape).add_(x)
    return noise


def replicate(x: Tensor, m: int) -> Tensor:
    """``x`` repeated ``m`` times in noise-major order (rows ``i*B..`` are a copy of the whole batch)."""
    return x.repeat(m, *([1] * (x.dim() - 1)))


def mean_softmax(logits: Tensor, m: int) -> Tensor:
    """Soft smoothed classifier: the average over the ``m`` noise draws of softmax(logits), ``[B, C]``."""
    return logits.float().softmax(dim=1).view(m, -1, logits.shape[1]).mean(0)


def smoothed_nll(logits: Tensor, y: Tensor, m: int, reduction: str = "mean") -> Tensor:
    """-log of the soft smoothed classifier's probability of ``y``, clamped at 1e-20 as the reference code."""
    return F.nll_loss(mean_softmax(logits, m).clamp_min(1e-20).log(), y, reduction=reduction)


def unit_l2(g: Tensor, eps: float = 1e-8) -> Tensor:
    """Each example's gradient divided by its L2 norm (+ eps)."""
    norms = g.flatten(1).norm(dim=1).view(-1, *([1] * (g.dim() - 1)))
    return g / (norms + eps)


def project_l2(delta: Tensor, radius: float | Tensor) -> Tensor:
    """Renormalise each example's perturbation to L2 norm <= radius.

    A Python ``radius`` multiplies as a scalar kernel argument: no tensor is built from it, so on a GPU
    there is no host-to-device copy (and no wait for the host) per attack step.  A tensor ``radius``
    (one for all, or one per example, broadcastable to ``[B, 1, ...]``) works too.
    """
    norms = delta.flatten(1).norm(dim=1).view(-1, *([1] * (delta.dim() - 1)))
    if isinstance(radius, torch.Tensor):
        radius = radius.to(dtype=delta.dtype, device=delta.device)
    factor = torch.clamp((norms + 1e-12).reciprocal() * radius, max=1.0)
    return delta * factor


@contextmanager
def frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Attack-time model: eval mode (BN running stats) and no parameter gradients; restored afterwards."""
    was_training = model.training
    flags = [p.requires_grad for p in model.parameters()]
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in zip(model.parameters(), flags):
            p.requires_grad_(flag)
        model.train(was_training)
