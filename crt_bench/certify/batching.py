"""Forward batches of the sampling engine: their size and CPU threads.

* :func:`cuda_batch_from_memory`: the automatic batch size on a GPU (about half the free memory);
* :func:`intra_op_threads`: torch's intra-op threads for the duration of a block.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

CPU_AUTO_BATCH = 128
"""Noisy samples per forward pass on a CPU when no batch size is given.

With one batch per core (see ``Smooth(cpu_workers=...)``), 128 CIFAR-sized images per forward pass ran
ResNet-20 about 1.5x faster than Cohen's 1000 on 2 cores (64 and 128 were within 10% of each other for
ResNet-20/110; 128 was 20% faster for MobileNetV3); see ``benchmarks/bench_certify.py``.
"""

CUDA_MAX_AUTO_BATCH = 16_384
"""Upper bound of the batch size chosen from free GPU memory."""


def cuda_batch_from_memory(model: Callable, images: torch.Tensor, fmt: torch.memory_format, autocast) -> int:
    """Batch size that uses about half of the free GPU memory, from one probe forward pass of 64 zeros."""
    device = images.device
    probe = 64
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), autocast:
        x = torch.zeros((probe, *images.shape[1:]), dtype=torch.float32, device=device, memory_format=fmt)
        model(x)
        del x
    torch.cuda.synchronize(device)
    per_sample = max((torch.cuda.max_memory_allocated(device) - before) / probe, 1.0)
    free, _ = torch.cuda.mem_get_info(device)
    batch = int(0.5 * free / per_sample) // 64 * 64
    return int(min(max(batch, probe), CUDA_MAX_AUTO_BATCH))


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
