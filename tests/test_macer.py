"""MACER: the loss against a literal float64 transcription of its formula, the hinge/mask cases, the
deferred variant, the official recipe's lr schedule, validation, and a smoke run through certification."""
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Recorder
from scipy.stats import norm
from torch import nn

import crt_bench.methods.macer  # noqa: F401  (registers "macer")
from crt_bench.certify.resumable import certify_run
from crt_bench.config.certify import CertifyConfig
from crt_bench.config.schedule import lr_at_epoch
from crt_bench.core.errors import CrtBenchError
from crt_bench.methods.common import smoothed_nll
from crt_bench.methods.macer import first_decay_epoch, macer_hinge, macer_loss_from_logits
from crt_bench.methods.registry import StepContext, get_method
from crt_bench.store.store import ResultsStore
from crt_bench.train.resolve import resolve_run_config
from crt_bench.train.trainer import train_run
from helpers import assert_not_all_abstained

SIGMA = 0.5


def literal_macer(logits, y, k, sigma, lbd, gamma, beta):
    """MACER's loss written out per example in float64 (numpy + scipy), from noise-major [k*B, C] logits."""
    z = np.asarray(logits, dtype=np.float64)
    y = np.asarray(y)
    n_images = len(y)
    cl = rl = 0.0
    for b in range(n_images):
        rows = [z[j * n_images + b] for j in range(k)]
        soft = sum(np.exp(r - r.max()) / np.exp(r - r.max()).sum() for r in rows) / k
        cl += -math.log(soft[y[b]] + 1e-10)
        sharp = sum(np.exp(beta * r - beta * r.max()) / np.exp(beta * r - beta * r.max()).sum() for r in rows) / k
        order = np.argsort(-sharp, kind="stable")
        c1, p1, p2 = order[0], sharp[order[0]], sharp[order[1]]
        if c1 != y[b]:
            continue
        xi = norm.ppf(p1) - norm.ppf(p2)
        if np.isfinite(xi) and 0.0 <= xi <= gamma:
            rl += gamma - xi
    return (cl + lbd * (sigma / 2) * rl) / n_images


def from_rows(per_image: list[list[float]], k: int) -> torch.Tensor:
    """[k*B, C] noise-major logits in which every noise draw of image b has the logits per_image[b]."""
    return torch.tensor(per_image, dtype=torch.float32).repeat(k, 1)




def batch(n=6, classes=4):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 4, 4, generator=g), torch.randint(0, classes, (n,), generator=g)


def ctx(epoch=0, epochs=440, sigma=SIGMA, **hp):
    return StepContext(sigma=sigma, hparams=get_method("macer").make_hparams(hp), epoch=epoch, epochs=epochs)


def test_loss_from_logits_equals_literal_float64_formula():
    k, n_images, classes = 4, 8, 5
    g = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.02, 0.5, n_images).repeat(k)[:, None]  # confident and unsure images
    logits = torch.randn(k * n_images, classes, generator=g) * scale
    y = torch.randint(0, classes, (n_images,), generator=g)
    y[:4] = mean_top_class(logits, k, beta=16.0)[:4]  # make sure some images are correctly classified
    kept = macer_hinge(logits, y, k, gamma=8.0, beta=16.0) > 0
    assert 0 < int(kept.sum()) < n_images, "the case must exercise both the kept and the dropped branch"
    for lbd, gamma, beta in ((12.0, 8.0, 16.0), (3.0, 1.0, 4.0), (0.0, 8.0, 16.0)):
        got = macer_loss_from_logits(logits, y, k, SIGMA, lbd, gamma, beta)
        expected = literal_macer(logits.numpy(), y.numpy(), k, SIGMA, lbd, gamma, beta)
        assert got.dtype == torch.float32
        assert got.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def mean_top_class(logits, k, beta):
    return (logits * beta).softmax(1).view(k, -1, logits.shape[1]).mean(0).argmax(1)


def test_registered_loss_is_one_forward_on_k_noise_major_copies_and_matches_literal():
    model, (x, y) = Recorder(classes=4), batch()
    k = 5
    torch.manual_seed(3)
    loss = get_method("macer").loss(model, x, y, ctx(k=k))
    assert len(model.inputs) == 1 and model.inputs[0].shape == (k * len(x), 3, 4, 4)
    noise = (model.inputs[0] - x.repeat(k, 1, 1, 1)).view(k, len(x), -1)
    assert 0.4 < noise.std().item() < 0.6, "N(0, sigma^2) in pixel space"
    assert not torch.allclose(noise[0], noise[1]), "each copy has its own draw"
    torch.manual_seed(3)
    expected_noise = (torch.randn(k * len(x), 3, 4, 4) * SIGMA).view(k, len(x), -1)
    assert torch.allclose(noise, expected_noise, atol=1e-6), "noise-major rows: row j*B+b is draw j of image b"
    with torch.no_grad():
        logits = model.fc(model.inputs[0].flatten(1))
    expected = literal_macer(logits.numpy(), y.numpy(), k, SIGMA, 12.0, 8.0, 16.0)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_hinge_is_zero_once_the_surrogate_radius_exceeds_gamma():
    # two classes, beta=1: p2 = 1e-5 -> xi = 2 * Phi^-1(1 - 1e-5) = 8.53, finite and not saturated
    gap = math.log((1 - 1e-5) / 1e-5)
    logits, y = from_rows([[gap, 0.0], [0.5, 0.0]], k=3), torch.tensor([0, 0])
    xi_far = 2 * norm.ppf(1 - 1e-5)
    assert 8.0 < xi_far < 9.0
    hinge = macer_hinge(logits, y, 3, gamma=8.0, beta=1.0)
    assert hinge[0].item() == 0.0
    assert hinge[1].item() == pytest.approx(8.0 - 2 * norm.ppf(1 / (1 + math.exp(-0.5))), rel=1e-5)
    wider = macer_hinge(logits, y, 3, gamma=9.0, beta=1.0)
    assert wider[0].item() == pytest.approx(9.0 - xi_far, abs=2e-3), "kept once gamma exceeds xi"


def test_hinge_is_zero_for_misclassified_examples():
    logits = from_rows([[0.3, 0.1, 0.0]] * 2, k=4)
    correct = macer_hinge(logits, torch.tensor([0, 0]), 4, gamma=8.0, beta=16.0)
    wrong = macer_hinge(logits, torch.tensor([1, 2]), 4, gamma=8.0, beta=16.0)
    assert (correct > 0).all() and (wrong == 0).all()
    # the misclassified example is still trained by the classification term
    ce_only = macer_loss_from_logits(logits, torch.tensor([1, 2]), 4, SIGMA, 0.0, 8.0, 16.0)
    assert macer_loss_from_logits(logits, torch.tensor([1, 2]), 4, SIGMA, 12.0, 8.0, 16.0) == ce_only


def test_saturated_probability_is_dropped_without_inf_or_nan_and_gradients_are_finite():
    # beta * 1.5 = 24: the runner-up is e^-24, so p1 rounds to 1.0 in float32 and Phi^-1(p1) = inf
    per_image = [[1.5, 0.0, 0.0], [0.2, 0.0, 0.1], [0.0, 3.0, 0.0]]
    logits = from_rows(per_image, k=2).requires_grad_(True)
    y = torch.tensor([0, 0, 1])
    p1 = (logits.detach()[:3] * 16).softmax(1).max(1).values
    assert p1[0].item() == 1.0 and p1[2].item() == 1.0 and p1[1].item() < 1.0
    assert math.isinf(torch.special.ndtri(p1[0]).item()), "the reference's icdf gives inf here"
    hinge = macer_hinge(logits, y, 2, gamma=8.0, beta=16.0)
    assert hinge[0].item() == 0.0 and hinge[2].item() == 0.0 and hinge[1].item() > 0
    loss = macer_loss_from_logits(logits, y, 2, SIGMA, 12.0, 8.0, 16.0)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    # in float64 the saturated example has xi > 10 > gamma: the drop agrees with the hinge at gamma=8
    assert literal_macer(logits.detach().numpy(), y.numpy(), 2, SIGMA, 12.0, 8.0, 16.0) == pytest.approx(loss.item(), rel=1e-5)


def test_gradient_matches_finite_differences_of_the_literal_formula():
    k = 2
    logits = from_rows([[0.2, 0.0, 0.05], [0.0, 0.1, 0.3]], k) + torch.tensor([[0.01], [0.0], [-0.02], [0.03]])
    y = torch.tensor([0, 2])
    leaf = logits.clone().requires_grad_(True)
    macer_loss_from_logits(leaf, y, k, SIGMA, 12.0, 8.0, 16.0).backward()
    assert (macer_hinge(logits, y, k, 8.0, 16.0) > 0).all(), "both examples inside the hinge"
    base = logits.double().numpy()
    numeric = np.zeros_like(base)
    eps = 1e-5
    for idx in np.ndindex(base.shape):
        up, down = base.copy(), base.copy()
        up[idx] += eps
        down[idx] -= eps
        numeric[idx] = (literal_macer(up, y.numpy(), k, SIGMA, 12.0, 8.0, 16.0)
                        - literal_macer(down, y.numpy(), k, SIGMA, 12.0, 8.0, 16.0)) / (2 * eps)
    assert np.allclose(leaf.grad.numpy(), numeric, rtol=1e-3, atol=1e-4)


def test_lambda_zero_is_the_soft_smoothed_cross_entropy():
    k, g = 3, torch.Generator().manual_seed(2)
    logits, y = torch.randn(k * 5, 4, generator=g) * 2, torch.randint(0, 4, (5,), generator=g)
    got = macer_loss_from_logits(logits, y, k, SIGMA, 0.0, 8.0, 16.0)
    soft = logits.softmax(1).view(k, 5, 4).mean(0)
    assert torch.allclose(got, -(soft[torch.arange(5), y] + 1e-10).log().mean())
    assert torch.allclose(got, smoothed_nll(logits, y, k), atol=1e-6)


def test_parameter_gradients_of_the_registered_loss_are_finite_and_use_the_hinge():
    model, (x, y) = Recorder(classes=4), batch()
    grads = []
    for lbd in (0.0, 12.0):
        model.zero_grad()
        torch.manual_seed(4)
        get_method("macer").loss(model, x, y, ctx(lbd=lbd, k=8)).backward()
        grads.append(model.fc.weight.grad.clone())
    assert all(torch.isfinite(g).all() for g in grads)
    assert not torch.allclose(grads[0], grads[1]), "the robustness term contributes a gradient"


def test_deferred_lambda_is_zero_until_the_first_lr_decay():
    model, (x, y) = Recorder(classes=4), batch()

    def loss_at(epoch, **hp):
        torch.manual_seed(6)
        return get_method("macer").loss(model, x, y, ctx(epoch=epoch, k=4, **hp))

    decay = first_decay_epoch(440)
    assert decay == 199
    assert loss_at(0, deferred=True) == loss_at(0, lbd=0.0)
    assert loss_at(198, deferred=True) == loss_at(198, lbd=0.0)
    assert loss_at(199, deferred=True) == loss_at(199)
    assert loss_at(199) != loss_at(199, lbd=0.0)
    for epochs in (2, 10, 440):
        cfg = resolve_run_config("macer", "tiny_cnn", epochs=epochs, device="cpu")
        assert first_decay_epoch(epochs) == cfg.milestones[0], "the decay the training loop applies"
    assert first_decay_epoch(1) == 1, "no decay in a 1-epoch run: deferred stays at lambda = 0"


def reference_lrs() -> dict[int, float]:
    """MACER main.py: MultiStepLR([200, 400], 0.1), scheduler.step() at the start of 1-indexed epochs."""
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[200, 400], gamma=0.1)
    lrs = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": MACER's order
        for epoch in range(1, 441):
            scheduler.step()
            lrs[epoch] = optimizer.param_groups[0]["lr"]
    return lrs


def test_recipe_and_lr_schedule_match_macer_main_py():
    r = get_method("macer").recipe
    assert (r.epochs, r.batch_size, r.lr, r.milestones, r.gamma, r.momentum, r.weight_decay) == (
        440, 64, 0.01, (199, 399), 0.1, 0.9, 5e-4)
    assert get_method("macer").steps_per_batch(get_method("macer").make_hparams()) == 1
    reference = reference_lrs()
    expected = {1: 0.01, 199: 0.01, 200: 1e-3, 399: 1e-3, 400: 1e-4, 440: 1e-4}  # MACER main.py: lr 0.01, x0.1 at 200 and 400
    for epoch_1, lr in expected.items():
        ours = lr_at_epoch(r.lr, r.milestones, r.gamma, epoch_1 - 1)
        assert ours == pytest.approx(lr) and reference[epoch_1] == pytest.approx(lr)
    assert all(lr_at_epoch(r.lr, r.milestones, r.gamma, e - 1) == pytest.approx(reference[e]) for e in reference)


def test_per_sigma_defaults_and_typed_overrides():
    spec = get_method("macer")
    as_tuple = lambda hp: (hp.k, hp.lbd, hp.gamma, hp.beta, hp.deferred)
    assert as_tuple(spec.make_hparams()) == (16, 12.0, 8.0, 16.0, False)
    assert as_tuple(spec.make_hparams(sigma=0.25)) == (16, 12.0, 8.0, 16.0, False)
    assert as_tuple(spec.make_hparams(sigma=0.5)) == (16, 6.0, 8.0, 16.0, False)
    assert as_tuple(spec.make_hparams(sigma=1.0)) == (16, 12.0, 8.0, 16.0, True)
    assert as_tuple(spec.make_hparams({"lbd": "12", "deferred": "false"}, sigma=1.0)) == (16, 12.0, 8.0, 16.0, False)


@pytest.mark.parametrize("override, message", [
    ({"k": "0"}, "k .*must be >= 1"),
    ({"gamma": "0"}, "gamma .*must be > 0"),
    ({"beta": "-1"}, "beta .*must be > 0"),
    ({"lbd": "-0.5"}, "lbd .*must be >= 0"),
])
def test_invalid_hparams_are_clear_errors(override, message):
    with pytest.raises(CrtBenchError, match=message):
        get_method("macer").make_hparams(override)


def test_smoke_run_trains_and_certifies(tmp_path: Path):
    store = ResultsStore(tmp_path)
    cfg = resolve_run_config("macer", "tiny_cnn", profile="smoke", epochs=1, train_limit=128, device="cpu")
    assert cfg.hparams["k"] == 16 and cfg.batch_size == 64
    run_id = train_run(cfg, store, progress=False)
    epochs = store.read("epochs")
    row = epochs[epochs["run_id"] == run_id]
    assert len(row) == 1 and np.isfinite(row["loss"].iloc[0]) and row["lr"].iloc[0] == pytest.approx(0.01)
    _, rows = certify_run(run_id, store, CertifyConfig(n0=20, n=100, alpha=0.001, batch=100, subset="range:0:4"),
                          device="cpu", progress=False)
    assert list(rows["idx"]) == [0, 1, 2, 3]
    assert_not_all_abstained(rows)
    assert (rows["sigma"] == 0.25).all() and (rows["n"] == 100).all()
    assert ((rows["radius"] >= 0) & (rows["radius"] <= 0.25 * norm.ppf(0.001 ** (1 / 100)) + 1e-9)).all()


def test_loss_is_float32_under_bf16_autocast():
    model, (x, y) = Recorder(classes=4), batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = get_method("macer").loss(model, x, y, ctx(k=4))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(model.fc.weight.grad).all()
