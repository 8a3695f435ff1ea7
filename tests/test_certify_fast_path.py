"""The engine's fast CPU path: exact early abstention, precision ``fastest``, compiled + frozen forward."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crt_bench.certify.prepare import CastInput, fastest_precision, prepare_model
from crt_bench.certify import engine as engine_mod
from crt_bench.certify.smooth import Smooth
from crt_bench.certify.stats import ABSTAIN, lower_confidence_bound, min_certifying_count
from crt_bench.config.choices import PRECISIONS, Precision, check_precision


class Pixels(torch.nn.Module):
    """Logits = the first ten pixels; counts the noisy samples it sees.

    An image with pixel ``k`` far above the others is class ``k`` under any noise (certified); a flat image
    is any of the ten classes with probability 1/10 (CERTIFY abstains).
    """

    def __init__(self) -> None:
        super().__init__()
        self.samples = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.samples += x.shape[0]
        return x.flatten(1)[:, :10]


CERTIFIED = (0, 3, 5, 7)


def images_some_abstain() -> torch.Tensor:
    """Eight 1x4x4 images: those in CERTIFIED have one pixel at 4, the others are flat (abstain)."""
    images = torch.full((8, 1, 4, 4), 0.5)
    for i in CERTIFIED:
        images[i].view(-1)[i] = 4.0
    return images


def certify(early_stop: bool, batch: int) -> tuple[list[tuple[int, float]], int, int]:
    model = Pixels()
    smooth = Smooth(model, 10, 0.5, noise_seed=11, early_stop=early_stop)
    rows = smooth.certify_many(images_some_abstain(), 50, 2000, 0.001, batch_size=batch)
    return rows, model.samples, smooth.last_samples


@pytest.mark.parametrize("batch", [64, 300])
def test_early_abstention_gives_the_same_rows_with_fewer_forwards(batch: int) -> None:
    full, full_forwards, full_samples = certify(early_stop=False, batch=batch)
    early, early_forwards, early_samples = certify(early_stop=True, batch=batch)
    assert early == full
    assert [i for i, (prediction, _) in enumerate(full) if prediction != ABSTAIN] == list(CERTIFIED), full
    assert full_samples == full_forwards == 8 * (50 + 2000)
    # a flat image's estimation can stop once about 930 of its 2000 votes missed (1,070 needed)
    assert early_forwards == early_samples < full_forwards - 4 * 700


def test_early_abstention_is_off_without_keyed_noise() -> None:
    model = Pixels()
    smooth = Smooth(model, 10, 0.5, generator=torch.Generator().manual_seed(0))
    smooth.certify_many(images_some_abstain(), 50, 2000, 0.001, batch_size=64)
    assert model.samples == smooth.last_samples == 8 * 2050


@pytest.mark.parametrize("n,alpha", [(100, 0.001), (10_000, 0.001), (1000, 0.01)])
def test_min_certifying_count_is_the_abstention_boundary(n: int, alpha: float) -> None:
    m = min_certifying_count(n, alpha)
    assert lower_confidence_bound(m, n, alpha) >= 0.5 > lower_confidence_bound(m - 1, n, alpha)


def test_min_certifying_count_when_nothing_certifies() -> None:
    assert min_certifying_count(5, 0.001) == 6  # 5 of 5 votes: lower bound 0.25


def test_fastest_is_a_precision_choice_and_picks_bf16_only_when_faster() -> None:
    assert "fastest" in PRECISIONS and check_precision("Fastest") == Precision.FASTEST.value
    assert fastest_precision({"fp32": 1.0, "bf16": 0.5}) == "bf16"
    assert fastest_precision({"fp32": 1.0, "bf16": 1.0}) == "fp32"
    assert fastest_precision({"fp32": 0.4, "bf16": 0.5}) == "fp32"
    assert fastest_precision({"fp32": 0.4}) == "fp32"


def test_fastest_records_what_it_chose_and_certifies_as_that_precision() -> None:
    model = Pixels()
    smooth = Smooth(model, 10, 0.5, noise_seed=3, precision="fastest")
    assert smooth.precision == "fastest"
    smooth.warm_up(images_some_abstain()[0], [64])
    chosen = smooth.precision
    assert chosen in ("fp32", "bf16") and set(smooth.precision_timings) == {"fp32", "bf16"}
    rows = smooth.certify_many(images_some_abstain(), 50, 500, 0.001, batch_size=64)
    same = Smooth(Pixels(), 10, 0.5, noise_seed=3, precision=chosen)
    assert rows == same.certify_many(images_some_abstain(), 50, 500, 0.001, batch_size=64)


class ConvBN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def test_bf16_prepared_copy_casts_its_input_and_leaves_the_model_float32() -> None:
    torch.manual_seed(0)
    model = ConvBN().eval()
    copy, folded, casts = prepare_model(model, (3, 8, 8), "bf16", compile=False, fold=True, channels_last=None)
    assert folded == 1 and not casts  # eager: autocast, as before
    with torch.no_grad():
        prepared = CastInput(copy.to(torch.bfloat16), torch.bfloat16)
        x = torch.rand(5, 3, 8, 8)
        out = prepared(x)
        assert out.dtype == torch.bfloat16
        assert torch.allclose(out.float(), model(x), atol=0.1)
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_compiled_engine_agrees_with_the_eager_one() -> None:
    """torch.compile (frozen) at one static batch shape: the padded tail batch gives the same votes."""
    torch.manual_seed(0)
    model = ConvBN().eval()
    x = torch.rand(3, 3, 8, 8)
    eager = Smooth(model, 4, 0.25, noise_seed=5, cpu_workers=1)
    compiled = Smooth(model, 4, 0.25, noise_seed=5, cpu_workers=1, compile=True)
    compiled.warm_up(x[0], [100])
    a = eager.sample_counts(x, 250, batch_size=100)
    b = compiled.sample_counts(x, 250, batch_size=100)
    assert np.abs(a - b).sum() <= 6, (a, b)  # rounding of the compiled kernels may flip a few argmaxes
    assert b.sum() == 750


def test_a_cpu_conv_model_samples_in_one_worker_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's CPU mode: as many one-thread workers as torch has threads (the count is read before the
    engine drops to one intra-op thread per worker, else it would sample on a single core)."""
    seen: list[int] = []
    real = engine_mod.ThreadPoolExecutor

    def spy(workers, **kwargs):
        seen.append(workers)
        return real(workers, **kwargs)

    monkeypatch.setattr(engine_mod, "ThreadPoolExecutor", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(3)).eval()
        net(torch.zeros(1, 1, 6, 6))
        Smooth(net, 3, 0.25, noise_seed=0).certify_many(torch.rand(2, 1, 6, 6), 10, 200, 0.01, batch_size=32)
    finally:
        torch.set_num_threads(before)
    assert seen == [2] and torch.get_num_threads() == before
