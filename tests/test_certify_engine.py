"""The certification engine (crt_bench.certify.smooth.Smooth): same statistics as Cohen et al.'s loop, faster.

Checked against a reference loop written here with the reference semantics (one image at a time,
``x.repeat``, ``randn_like * sigma``, counts on the host), on base classifiers whose class
probabilities under noise are known in closed form.  Every test uses fixed seeds, so it is
deterministic; the statistical thresholds are tests at level 1e-6, which a correct engine fails
with probability about 1e-6 for a fresh seed anyway.
"""

from __future__ import annotations

from math import ceil

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import chi2_contingency, chisquare, norm

from crt_bench.certify.driver import certify_dataset, iter_certify
from crt_bench.certify.smooth import Smooth
from crt_bench.certify.stats import ABSTAIN, counts_for_radius, radius_from_counts
from crt_bench.config.choices import NOISE_DTYPE, PRECISIONS, check_precision
from crt_bench.core.errors import CrtBenchError
from crt_bench.models.bn_fold import fold_batchnorm

LEVEL = 1e-6
SIGMA = 0.5


class ThreeWay(torch.nn.Module):
    """Class 0, 1 or 2 as the projection ``s = w.x`` falls below ``t1``, in ``[t1, t2)`` or above ``t2``.

    Under ``x + eps``, ``s ~ N(w.x, (sigma ||w||)^2)``, so the class probabilities are known exactly.
    """

    def __init__(self, w: torch.Tensor, t1: float, t2: float) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(w.flatten().clone(), requires_grad=False)
        self.t1, self.t2 = t1, t2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1).float() @ self.w
        return torch.stack([self.t1 - s, torch.minimum(s - self.t1, self.t2 - s), s - self.t2], dim=1)

    def probabilities(self, x: torch.Tensor, sigma: float) -> np.ndarray:
        mean = float(x.flatten() @ self.w)
        sd = sigma * float(self.w.norm())
        low, high = norm.cdf((self.t1 - mean) / sd), norm.cdf((self.t2 - mean) / sd)
        return np.array([low, high - low, 1.0 - high])


W = torch.tensor([[[3.0, -4.0], [1.0, 2.0]]])  # ||w|| = sqrt(30), on [1, 2, 2] images
X = torch.tensor([[[0.6, 0.2], [0.5, 0.5]]])  # w.x = 2.5
MODEL = ThreeWay(W, t1=1.0, t2=5.5)  # P = (0.29, 0.57, 0.14) at X for sigma 0.5


def reference_counts(model: torch.nn.Module, x: torch.Tensor, num: int, batch: int, sigma: float,
                     num_classes: int) -> np.ndarray:
    """Cohen et al.'s ``_sample_noise``: repeat the image, add ``randn_like * sigma``, count on the host."""
    counts = np.zeros(num_classes, dtype=np.int64)
    with torch.no_grad():
        remaining = num
        for _ in range(ceil(num / batch)):
            size = min(batch, remaining)
            remaining -= size
            copies = x.repeat((size, 1, 1, 1))
            predictions = model(copies + torch.randn_like(copies) * sigma).argmax(1)
            counts += np.bincount(predictions.cpu().numpy(), minlength=num_classes)
    return counts


def assert_same_distribution(a: np.ndarray, b: np.ndarray) -> None:
    """Two-sample chi-square test of homogeneity (classes with no votes in either sample dropped)."""
    table = np.stack([a, b])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return
    assert chi2_contingency(table).pvalue > LEVEL, table


def assert_distribution(counts: np.ndarray, p: np.ndarray) -> None:
    assert chisquare(counts, counts.sum() * p).pvalue > LEVEL, (counts, counts.sum() * p)


def test_engine_and_reference_loop_agree_with_each_other_and_with_the_exact_probabilities() -> None:
    torch.manual_seed(0)
    p = MODEL.probabilities(X, SIGMA)
    assert np.allclose(p, [0.29, 0.57, 0.14], atol=0.01)
    num = 20_000
    reference = reference_counts(MODEL, X, num, 1000, SIGMA, 3)
    # the engine certifies X between two other images, in batches that straddle the images
    others = torch.rand(2, 1, 2, 2, generator=torch.Generator().manual_seed(1))
    smooth = Smooth(MODEL, 3, SIGMA, generator=torch.Generator().manual_seed(2))
    engine = smooth.sample_counts(torch.stack([others[0], X, others[1]]), num, batch_size=777)
    assert engine.sum(axis=1).tolist() == [num] * 3
    assert_distribution(reference, p)
    assert_distribution(engine[1], p)
    assert_same_distribution(reference, engine[1])
    for row, other in zip((0, 2), others):
        assert_distribution(engine[row], MODEL.probabilities(other, SIGMA))
    # nA / n of the top class: two-proportion z test between engine and reference
    top = int(np.argmax(p))
    pooled = (reference[top] + engine[1][top]) / (2 * num)
    z = (reference[top] - engine[1][top]) / num / np.sqrt(2 * pooled * (1 - pooled) / num)
    assert abs(z) < norm.ppf(1 - LEVEL / 2)


def test_certify_many_matches_certify_statistics_per_image() -> None:
    """certify_many on K images = K independent CERTIFY runs: compare the radius distributions."""
    model = ThreeWay(W, t1=-20.0, t2=3.5)  # two classes in effect: P(class 1) = Phi((3.5 - 2.5) / (0.5 sqrt 30))
    n0, n, alpha, trials = 20, 400, 0.01, 300
    many = Smooth(model, 3, SIGMA, generator=torch.Generator().manual_seed(3))
    batched = many.certify_many(X.expand(trials, 1, 2, 2), n0, n, alpha, batch_size=1000)
    single = Smooth(model, 3, SIGMA, generator=torch.Generator().manual_seed(4))
    one_by_one = [single.certify(X, n0, n, alpha, batch_size=1000) for _ in range(trials)]
    p1 = float(model.probabilities(X, SIGMA)[1])
    for results in (batched, one_by_one):
        predictions = np.array([c for c, _ in results])
        assert set(predictions.tolist()) <= {1, ABSTAIN}
        # radius -> nA is monotone, so compare the nA implied by each radius with Binomial(n, p1)
        radii = np.array([r for c, r in results if c == 1])
        assert len(radii) > 0.9 * trials
        n_a = np.array([counts_for_radius(r, n, alpha, SIGMA) for r in radii])
        mean, sd = n * p1, np.sqrt(n * p1 * (1 - p1))
        assert abs(n_a.mean() - mean) < 5 * sd / np.sqrt(len(n_a)) + 1
        assert 0.7 * sd < n_a.std() < 1.3 * sd
    assert len(set(batched)) > 10  # fresh noise per image: not one result copied K times


class Recorder(torch.nn.Module):
    """Class = which of three brightness bins the mean pixel falls in; records every input batch."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0), requires_grad=False)
        self.inputs: list[torch.Tensor] = []
        self.seen: list[tuple[torch.dtype, bool, torch.dtype]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        mean = x.flatten(1).mean(dim=1, keepdim=True) * self.scale
        logits = -(mean - torch.tensor([[0.1, 0.5, 0.9]], device=x.device)).abs()
        projected = torch.nn.functional.linear(logits, torch.eye(3, device=x.device))  # autocast op
        self.seen.append((x.dtype, torch.is_autocast_enabled(x.device.type), projected.dtype))
        return projected


def test_multi_image_batches_map_every_sample_to_its_own_image() -> None:
    """Images of brightness 0.1 / 0.5 / 0.9 with tiny noise: every vote must land in the image's class."""
    recorder = Recorder()
    images = torch.stack([torch.full((3, 4, 4), v) for v in (0.9, 0.1, 0.5, 0.1)])
    smooth = Smooth(recorder, 3, 0.01, generator=torch.Generator().manual_seed(0))
    counts = smooth.sample_counts(images, 50, batch_size=7)  # 200 samples in 29 batches
    assert counts.tolist() == [[0, 0, 50], [50, 0, 0], [0, 50, 0], [50, 0, 0]]
    assert sum(len(x) for x in recorder.inputs) == 200 and max(len(x) for x in recorder.inputs) == 7
    # certify_many: selection (n0) and estimation (n) samples of each image, nothing more
    recorder.inputs.clear()
    results = smooth.certify_many(images, 30, 70, 0.01, batch_size=64)
    assert [c for c, _ in results] == [2, 0, 1, 0]
    assert sum(len(x) for x in recorder.inputs) == 4 * (30 + 70)
    cap = radius_from_counts(70, 70, 0.01, 0.01)
    assert [r for _, r in results] == [cap] * 4


def test_noise_is_fresh_for_every_sample_even_for_identical_images() -> None:
    recorder = Recorder()
    image = torch.full((3, 4, 4), 0.5)
    smooth = Smooth(recorder, 3, SIGMA, generator=torch.Generator().manual_seed(0))
    smooth.certify_many(torch.stack([image, image]), 10, 40, 0.01, batch_size=32)
    noise = torch.cat(recorder.inputs) - image
    assert noise.shape[0] == 2 * (10 + 40)
    flat = noise.flatten(1)
    assert torch.unique(flat, dim=0).shape[0] == flat.shape[0]  # no noise vector is reused
    assert abs(float(flat.std()) - SIGMA) < 0.05
    # two identical images sharing batches get different counts in general
    model = ThreeWay(W, t1=1.0, t2=5.5)
    counts = Smooth(model, 3, SIGMA, generator=torch.Generator().manual_seed(5)).sample_counts(
        torch.stack([X, X]), 1000, batch_size=300)
    assert counts[0].tolist() != counts[1].tolist()
    assert_same_distribution(counts[0], counts[1])


def test_an_images_counts_do_not_depend_on_its_batch_mates() -> None:
    num = 20_000
    p = MODEL.probabilities(X, SIGMA)
    alone = Smooth(MODEL, 3, SIGMA, generator=torch.Generator().manual_seed(6)).sample_counts(X[None], num, 512)
    mates = torch.cat([torch.zeros(1, 1, 2, 2), X[None], torch.ones(1, 1, 2, 2)])
    shared = Smooth(MODEL, 3, SIGMA, generator=torch.Generator().manual_seed(7)).sample_counts(mates, num, 512)
    assert_distribution(alone[0], p)
    assert_distribution(shared[1], p)
    assert_same_distribution(alone[0], shared[1])


def test_bf16_autocasts_the_classifier_but_keeps_the_noise_float32() -> None:
    recorder = Recorder()
    image = torch.full((3, 4, 4), 0.5)
    smooth = Smooth(recorder, 3, SIGMA, generator=torch.Generator().manual_seed(0), precision="bf16")
    assert smooth.noise_dtype == NOISE_DTYPE == "float32"
    smooth.certify(image, 10, 50, 0.01, batch_size=25)
    assert recorder.seen and all(seen == (torch.float32, True, torch.bfloat16) for seen in recorder.seen)
    noise = torch.cat(recorder.inputs) - image
    assert not torch.equal(noise.to(torch.bfloat16).float(), noise)  # not bf16-valued noise
    fp32 = Recorder()
    Smooth(fp32, 3, SIGMA, precision="fp32").certify(image, 10, 50, 0.01, batch_size=25)
    assert all(seen == (torch.float32, False, torch.float32) for seen in fp32.seen)
    fp16 = Recorder()
    Smooth(fp16, 3, SIGMA, precision="FP16").predict(image, 20, 0.01, batch_size=25)
    assert all(seen == (torch.float32, True, torch.float16) for seen in fp16.seen)


@pytest.mark.parametrize("name", ["int8", "float64", "", "bf32"])
def test_bad_precision_is_a_clear_error(name: str) -> None:
    with pytest.raises(CrtBenchError, match="unknown precision .* valid names: fp32, tf32, bf16, fp16"):
        Smooth(MODEL, 3, SIGMA, precision=name)
    with pytest.raises(CrtBenchError, match="unknown precision"):
        certify_dataset(MODEL, X[None], torch.tensor([0]), sigma=SIGMA, num_classes=3, n0=5, n=5, alpha=0.01,
                        batch_size=5, indices=[0], progress=False, precision=name)
    assert [check_precision(p.upper()) for p in PRECISIONS] == list(PRECISIONS)


class ConvBN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = torch.nn.BatchNorm2d(8)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).mean(dim=(2, 3)))


def conv_bn_model() -> ConvBN:
    torch.manual_seed(0)
    model = ConvBN()
    with torch.no_grad():
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
        model.bn.weight.uniform_(0.5, 1.5)
        model.bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


def test_batchnorm_folding_is_exact_up_to_rounding_and_leaves_the_model_alone() -> None:
    model = conv_bn_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, count = fold_batchnorm(model, (3, 8, 8))
    assert count == 1 and folded is not None
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    x = torch.rand(16, 3, 8, 8)
    with torch.inference_mode():
        assert torch.allclose(folded(x), model(x), rtol=1e-4, atol=1e-5)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert fold_batchnorm(MODEL, (1, 2, 2)) == (None, 0)  # nothing to fold: the model is used as given


def test_engine_model_copy_follows_in_place_weight_changes() -> None:
    model = conv_bn_model()
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(0))
    smooth = Smooth(model, 3, 0.01, generator=torch.Generator().manual_seed(0))
    first = smooth.sample_counts(image[None], 50, 50)[0]
    assert smooth.folded_batchnorms == 1
    with torch.no_grad():  # make class 2 win everywhere
        model.fc.bias.copy_(torch.tensor([-100.0, -100.0, 100.0]))
    second = smooth.sample_counts(image[None], 50, 50)[0]
    assert second.tolist() == [0, 0, 50] and first.tolist() != second.tolist()


def test_auto_batch_size_and_certify_dataset_settings() -> None:
    model = conv_bn_model()
    images = torch.rand(5, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 1, 2, 0, 1])
    [(frame, engine)] = iter_certify(model, images, labels, sigma=0.25, num_classes=3, n0=10, n=40, alpha=0.01,
                                     batch_size=None, indices=[0, 2, 4], generator=torch.Generator().manual_seed(0),
                                     progress=False, precision="bf16")
    assert frame["idx"].tolist() == [0, 2, 4]
    assert engine.batch_size == Smooth(model, 3, 0.25).auto_batch_size(images[0]) > 0
    assert engine.precision == "bf16" and engine.noise_dtype == "float32"
    assert engine.folded_batchnorms == 1 and engine.compile is False


def test_certify_run_records_precision_and_noise_dtype(tmp_path) -> None:
    from crt_bench.certify.resumable import certify_run
    from crt_bench.config.certify import CertifyConfig
    from crt_bench.data.catalog import dataset_info
    from crt_bench.models.build import build_model
    from crt_bench.models.files import model_metadata
    from crt_bench.store.store import ResultsStore

    info = dataset_info("synthetic")
    torch.manual_seed(0)
    model = build_model("tiny_cnn", num_classes=10, in_chans=3, mean=info.mean, std=info.std)
    path = tmp_path / "model.pt"
    meta = model_metadata("tiny_cnn", info, sigma=0.25, method="gaussian", run_id="engine-test")
    torch.save({**meta, "state_dict": model.state_dict()}, path)
    store = ResultsStore(tmp_path / "results")
    ccfg = CertifyConfig(n0=10, n=30, alpha=0.01, batch=16, subset="range:0:3")
    _, rows = certify_run(str(path), store, ccfg, device="cpu", progress=False, precision="bf16")
    assert rows["precision"].tolist() == ["bf16"] * 3
    assert rows["noise_dtype"].tolist() == ["float32"] * 3
    assert rows["batch"].tolist() == [16] * 3 and not rows["compile"].any()
    stored = store.read("certify")
    assert stored["precision"].tolist() == ["bf16"] * 3
    _, default = certify_run(str(path), store, ccfg, device="cpu", progress=False)
    assert default["precision"].tolist() == ["fp32"] * 3
    with pytest.raises(CrtBenchError, match="unknown precision"):
        certify_run(str(path), store, ccfg, device="cpu", progress=False, precision="fp8")
    with pytest.raises(CrtBenchError, match="tf32 needs an NVIDIA GPU .* device is cpu"):
        certify_run(str(path), store, ccfg, device="cpu", progress=False, precision="tf32")
    assert len(store.read("certify")) == 6 and len(store.read("certifications")) == 4  # refused before any work
    pd.testing.assert_series_equal(stored["idx"], pd.Series([0, 1, 2]), check_names=False)


class ConvHead(torch.nn.Module):
    """Logits = BatchNorm(one 8x8 convolution over the whole image): affine in x, so every class gets votes."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 3, 8)
        self.bn = torch.nn.BatchNorm2d(3).eval()
        with torch.no_grad():
            self.bn.running_var.fill_(4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)).flatten(1)


def test_cpu_worker_threads_are_reproducible_and_agree_with_the_serial_path() -> None:
    model = ConvHead().eval()
    image = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()

    def counts(seed: int, workers: int) -> np.ndarray:
        smooth = Smooth(model, 3, SIGMA, generator=torch.Generator().manual_seed(seed), cpu_workers=workers)
        return smooth.sample_counts(torch.stack([image, 1 - image]), 6000, batch_size=256)

    parallel = counts(0, 2)
    assert torch.get_num_threads() == threads  # restored after the worker threads
    assert parallel.sum(axis=1).tolist() == [6000, 6000]
    assert (parallel > 100).sum() >= 4  # non-trivial votes
    assert np.array_equal(counts(0, 2), parallel)  # the noise is drawn in order: reproducible
    serial = counts(1, 1)
    for k in range(2):
        assert_same_distribution(parallel[k], serial[k])


def test_errors_in_worker_threads_reach_the_caller() -> None:
    class WrongWidth(ConvBN):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return super().forward(x)[:, :2]

    smooth = Smooth(WrongWidth().eval(), 3, SIGMA, cpu_workers=2)
    with pytest.raises(CrtBenchError, match=r"expected \[batch, 3\] logits"):
        smooth.certify(torch.rand(3, 8, 8), 10, 500, 0.01, batch_size=20)
    assert smooth._workers(torch.device("cpu")) == 2
