"""Forward batches of the sampling engine: their size, the shapes a certification uses, CPU threads.

* :func:`cuda_batch_from_memory`: the automatic batch size on a GPU (about half the free memory);
* :func:`forward_batch_sizes`: every batch size a run of sampling calls will feed the model (the full
  batch and each call's smaller tail), so that a warm-up can compile and tune each shape before the
  timed work (:meth:`crt_bench.certify.smooth.Smooth.warm_up`);
* :func:`intra_op_threads`: torch's intra-op threads for the duration of a block.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


def forward_batch_sizes(images_per_call: Iterable[int], samples_per_image: int, batch: int) -> list[int]:
    """The distinct forward batch sizes of sampling calls of ``images_per_call`` images each.

    A call lays its images' ``samples_per_image`` noisy copies end to end and cuts them into batches of
    ``batch`` (:class:`crt_bench.certify.stream.SampleStream`): full batches, then a smaller tail when
    the total is not a multiple of ``batch``.  Largest first.
    """
    sizes: set[int] = set()
    for k in images_per_call:
        total = int(k) * int(samples_per_image)
        if total >= batch:
            sizes.add(int(batch))
        if total % batch:
            sizes.add(total % batch)
    return sorted(sizes, reverse=True)


def probe_input(count: int, images: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    """``count`` float32 zeros shaped like one of ``images`` each, on their device, laid out as ``fmt``.

    ``torch.zeros`` takes no ``memory_format`` (the first GPU run failed on that): ``torch.empty`` does.
    """
    return torch.empty((count, *images.shape[1:]), dtype=torch.float32, device=images.device,
                       memory_format=fmt).zero_()


def cuda_batch_from_memory(model: Callable, images: torch.Tensor, fmt: torch.memory_format, autocast) -> int:
    """Batch size that uses about half of the free GPU memory, from one probe forward pass of 64 zeros."""
    device = images.device
    probe = 64
    torch.cuda.synchronize(device)
    before = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    with torch.inference_mode(), autocast:
        x = probe_input(probe, images, fmt)
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
