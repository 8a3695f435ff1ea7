"""Layers the timm adaptations (:mod:`crt_bench.models.timm_models`) add in front of timm's own modules."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class PadToMultiple(nn.Module):
    """Zero-pad H and W (evenly on both sides) up to the next multiple of ``multiple``.

    A no-op on 32x32 inputs; lets networks whose shortcut pooling needs even feature maps at every
    downsampling (DLA) take 28x28 inputs (padded to 32x32).
    """

    def __init__(self, multiple: int) -> None:
        super().__init__()
        self.multiple = multiple

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        if ph == 0 and pw == 0:
            return x
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))

    def extra_repr(self) -> str:
        return f"multiple={self.multiple}"
