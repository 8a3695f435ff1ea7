"""Size and compute of each architecture, and the generation sequence of Figure 1.

``arch_stats`` counts parameters and the FLOPs of one forward pass of one image with PyTorch's own
counter (``torch.utils.flop_counter.FlopCounterMode``), which counts matrix products and
convolutions at 2 FLOPs per multiply-accumulate; element-wise work (normalisation, activations,
pooling, softmax) is not counted. Attention is computed with the math backend of
``scaled_dot_product_attention`` while counting, so its two matrix products are counted too (the
fused CPU kernel is invisible to the counter). The ``NormalizeLayer`` that ``build_model`` puts in front has no
parameters and only element-wise work, so the bare network is measured. Re-parameterisable models
(FastViT) are measured in their train-time, multi-branch form: the form that is trained.

``generations`` is the registry's generation sequence: the timm families in release order, without
the in-project CIFAR ResNets (the teachers) and the test-only ``tiny_cnn``.
"""
from __future__ import annotations

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from crt_bench.models.registry import get_arch


def arch_stats(name: str, *, in_chans: int = 3, image_size: int = 32, num_classes: int = 10) -> dict:
    """``{"params": int, "flops_per_image": float}`` of architecture ``name`` (a name or an alias).

    FLOPs are those of one eval-mode forward pass of a single ``in_chans x image_size x image_size``
    image; unknown names raise :class:`~crt_bench.core.errors.CrtBenchError` listing the valid names.
    """
    spec = get_arch(name)
    model = spec.builder(num_classes=num_classes, in_chans=in_chans)
    params = sum(p.numel() for p in model.parameters())
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(torch.zeros(1, in_chans, image_size, image_size))
    return {"params": int(params), "flops_per_image": float(counter.get_total_flops())}
