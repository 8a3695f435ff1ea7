"""The certification engine on a GPU: the automatic batch size, NHWC noisy batches, bf16, exact rows.

The first GPU run failed in the automatic batch size (``torch.zeros`` takes no ``memory_format``), a path
no CPU test reached: the probe input is now built by :func:`probe_input`, tested here on every device,
and CERTIFY itself runs on CUDA in the gpu-marked tests (``make test-gpu``).
"""
from __future__ import annotations

import pytest
import torch
from scipy.stats import norm

from crt_bench.certify.batching import CUDA_MAX_AUTO_BATCH, probe_input
from crt_bench.certify.smooth import Smooth
from crt_bench.certify.stats import ABSTAIN
from crt_bench.models.build import build_model

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
CERTIFIED = (0, 3, 5, 7)
SIGMA, N0, N, ALPHA = 0.5, 50, 2000, 0.001


class PixelConv(torch.nn.Module):
    """Logits = the first ten pixels of a 1x4x4 image, computed by a convolution (so that the engine
    treats it as a conv net: NHWC batches on CUDA).  A pixel at 4 among pixels at 0.5 is its class under
    any noise of sigma 0.5 (7 sigma apart); a flat image is each class with probability 1/10."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 10, kernel_size=4, bias=False)
        with torch.no_grad():
            self.conv.weight.zero_()
            for k in range(10):
                self.conv.weight[k, 0, k // 4, k % 4] = 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x).flatten(1)


def images_some_abstain(device: str) -> torch.Tensor:
    images = torch.full((8, 1, 4, 4), 0.5)
    for i in CERTIFIED:
        images[i].view(-1)[i] = 4.0
    return images.to(device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fmt", [torch.channels_last, torch.contiguous_format])
def test_probe_input_is_zeros_in_the_asked_layout(device: str, fmt: torch.memory_format) -> None:
    images = torch.rand(2, 3, 8, 5, device=device)
    x = probe_input(64, images, fmt)
    assert x.shape == (64, 3, 8, 5) and x.dtype == torch.float32 and x.device.type == device
    assert x.is_contiguous(memory_format=fmt)
    assert not x.is_contiguous() if fmt == torch.channels_last else x.is_contiguous()
    assert int(torch.count_nonzero(x)) == 0


@pytest.mark.gpu
def test_cuda_auto_batch_is_a_multiple_of_64_within_bounds() -> None:
    net = build_model("resnet20", num_classes=10, in_chans=3, mean=[0.5] * 3, std=[0.25] * 3).cuda().eval()
    for precision in ("fp32", "bf16"):
        batch = Smooth(net, 10, 0.25, noise_seed=0, precision=precision).auto_batch_size(torch.rand(3, 32, 32).cuda())
        assert 64 <= batch <= CUDA_MAX_AUTO_BATCH and batch % 64 == 0


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_certify_gives_the_exact_rows_with_the_automatic_batch(device: str, precision: str) -> None:
    """Separable images certify at the largest radius CERTIFY can give, flat ones abstain, and the rows do
    not depend on the batch size or on early abstention (keyed noise)."""
    images = images_some_abstain(device)
    rows = {}
    for batch, early in ((None, True), (64, True), (None, False)):
        smooth = Smooth(PixelConv().to(device), 10, SIGMA, noise_seed=7, precision=precision, early_stop=early)
        rows[(batch, early)] = smooth.certify_many(images, N0, N, ALPHA, batch_size=batch)
    best = SIGMA * norm.ppf(ALPHA ** (1 / N))  # Clopper-Pearson lower bound of N/N votes
    expected = [(i, pytest.approx(best, rel=1e-9)) if i in CERTIFIED else (ABSTAIN, 0.0) for i in range(8)]
    for got in rows.values():
        assert got == expected
    assert len({tuple(r) for r in rows.values()}) == 1
