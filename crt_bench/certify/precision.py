"""Precision of the base classifier's forward pass; the noise is float32 whatever is chosen."""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def uses_tf32(precision: str) -> bool:
    """Whether ``precision`` runs with TF32 on (only ``tf32``; every other precision runs with it off)."""
    return precision == "tf32"


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """The autocast context for ``precision`` on ``device`` (a no-op for ``fp32`` and ``tf32``)."""
    if precision not in AUTOCAST_DTYPES:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])
