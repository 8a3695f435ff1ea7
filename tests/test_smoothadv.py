"""SmoothAdv (Salman et al. 2019, PGD-L2, multi-noise training): the attack's defining properties and the
training objective, on a linear model over 3x4x4 images; plus an end-to-end smoke run and certification."""
import math
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import crt_bench.methods.smoothadv  # noqa: F401  (registers "smoothadv")
from crt_bench.certify.resumable import certify_run
from crt_bench.config.certify import CertifyConfig
from crt_bench.core.errors import CrtBenchError
from crt_bench.methods.common import noise_like_replicas, replicate, smoothed_nll
from crt_bench.methods.registry import StepContext, get_method
from crt_bench.methods.smoothadv import SmoothAdvHParams, pgd_l2_smoothed, warmup_epsilon
from crt_bench.store.store import ResultsStore
from crt_bench.train.resolve import resolve_run_config
from crt_bench.train.trainer import train_run
from helpers import assert_not_all_abstained

SIGMA = 0.25
CLASSES = 5


class Recorder(nn.Module):
    """Linear model on flattened 3x4x4 images that remembers every input and its train/eval mode."""

    def __init__(self, seed: int = 0, zero: bool = False):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(48, CLASSES)
        if zero:  # constant output: the attack loss has exactly zero input gradient
            nn.init.zeros_(self.fc.weight)
        self.inputs: list[torch.Tensor] = []
        self.modes: list[bool] = []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        self.modes.append(self.training)
        return self.fc(x.flatten(1))


def batch(n=6, lo=0.25, hi=0.75):
    g = torch.Generator().manual_seed(1)
    return lo + (hi - lo) * torch.rand(n, 3, 4, 4, generator=g), torch.randint(0, CLASSES, (n,), generator=g)


def ctx(epoch=0, **hp):
    return StepContext(sigma=SIGMA, hparams=get_method("smoothadv").make_hparams(hp), epoch=epoch, epochs=20)


def norms(t):
    return t.flatten(1).norm(dim=1)


def training_delta(model, x, m, seed):
    """The perturbation the training forward (the loss's last model call) saw, per noisy row."""
    torch.manual_seed(seed)
    noise = noise_like_replicas(x, m, SIGMA)  # the loss's first draw
    return (model.inputs[-1] - noise - replicate(x, m)).view(m, *x.shape)


# -- the attack ------------------------------------------------------------------------------------

@pytest.mark.parametrize("epoch, expected", [(0, 0.1), (4, 0.5), (9, 1.0), (30, 1.0)])
def test_delta_is_shared_across_noise_draws_and_reaches_the_warmed_up_radius(epoch, expected):
    m, eps = 3, 255 / 256
    model, (x, y) = Recorder(), batch()
    torch.manual_seed(11)
    get_method("smoothadv").loss(model, x, y, ctx(epoch, epsilon=eps, num_noise_vec=m))
    delta = training_delta(model, x, m, 11)
    for i in range(1, m):  # one delta per clean image, shared by its m noisy copies
        assert torch.allclose(delta[i], delta[0], atol=1e-6)
    eps_t = expected * eps
    assert warmup_epsilon(eps, epoch, 10) == pytest.approx(eps_t)
    n = norms(delta[0])
    assert (n <= eps_t * (1 + 1e-5)).all(), "||delta||_2 <= eps_t per image (warm-up: epoch 0 uses eps/10)"
    assert (n >= 0.99 * eps_t).all(), "a consistent ascent direction walks to the boundary in T=10 steps of 2eps/T"


@pytest.mark.parametrize("m", [1, 4])
def test_perturbed_image_stays_in_the_unit_box(m):
    x, y = batch(8, lo=0.0, hi=1.0)
    x[:, 0, 0, 0] = 0.0
    x[:, 1, 0, 0] = 1.0
    noise = noise_like_replicas(x, m, SIGMA)
    delta = pgd_l2_smoothed(Recorder(), x, y, noise, eps=4.0, steps=5, m=m)
    adv = x + delta
    assert adv.min() >= -1e-6 and adv.max() <= 1 + 1e-6
    assert (norms(delta) <= 4.0 * (1 + 1e-5)).all()
    assert (delta.abs() > 0.1).any(), "a large radius actually moved the images"


@pytest.mark.parametrize("m", [1, 3])
def test_attack_increases_the_smoothed_loss(m):
    model, (x, y) = Recorder(), batch(8)
    noise = noise_like_replicas(x, m, SIGMA)
    delta = pgd_l2_smoothed(model, x, y, noise, eps=0.5, steps=10, m=m)

    def loss(d):
        return smoothed_nll(model(replicate(x + d, m) + noise), y, m, reduction="none")

    clean, attacked, reverse = loss(torch.zeros_like(x)), loss(delta), loss(-delta)
    assert (attacked > clean + 1e-3).all(), "ascent: every image's smoothed NLL goes up"
    assert (reverse < clean).all(), "the sign is right: the opposite direction lowers the loss"


@pytest.mark.parametrize("m", [1, 3])
def test_no_random_start_first_step_follows_the_normalised_gradient(m):
    eps = 0.3
    model, (x, y) = Recorder(), batch()
    noise = noise_like_replicas(x, m, SIGMA)
    # the gradient at delta = 0, computed independently: CE for m = 1, -log mean softmax for m > 1
    d0 = torch.zeros_like(x, requires_grad=True)
    logits = model.fc((x + d0).repeat(m, 1, 1, 1).add(noise).flatten(1))
    probs = logits.softmax(1).view(m, -1, CLASSES).mean(0)
    target = F.cross_entropy(logits, y) if m == 1 else -probs.gather(1, y[:, None]).log().mean()
    (g,) = torch.autograd.grad(target, d0)
    unit = g / norms(g).view(-1, 1, 1, 1)

    model.inputs.clear()
    delta = pgd_l2_smoothed(model, x, y, noise, eps=eps, steps=1, m=m)  # T=1: step 2eps, projected to eps
    assert torch.allclose(model.inputs[0], replicate(x, m) + noise), "first forward at delta_0 = 0: no random start"
    assert torch.allclose(delta, eps * unit, atol=1e-6)
    assert torch.allclose(norms(delta), torch.full((len(x),), eps), atol=1e-6)

    model.inputs.clear()
    pgd_l2_smoothed(model, x, y, noise, eps=eps, steps=4, m=m)  # T=4: first step has norm 2eps/4 = eps/2
    first = (model.inputs[1] - noise - replicate(x, m))[: len(x)]
    assert len(model.inputs) == 4
    assert torch.allclose(first, (2 * eps / 4) * unit, atol=1e-6)


def test_zero_gradient_takes_a_random_direction_not_nan():
    model, (x, y) = Recorder(zero=True), batch()
    noise = noise_like_replicas(x, 2, SIGMA)
    delta = pgd_l2_smoothed(model, x, y, noise, eps=0.5, steps=2, m=2)
    assert torch.isfinite(delta).all()
    assert torch.allclose(norms(delta), torch.full((len(x),), 0.5), atol=1e-5)


def test_attack_freezes_the_model_and_restores_train_mode():
    model, (x, y) = Recorder(), batch()
    model.train()
    before = model.fc.weight.detach().clone()
    pgd_l2_smoothed(model, x, y, noise_like_replicas(x, 2, SIGMA), eps=0.5, steps=3, m=2)
    assert model.modes == [False] * 3, "the attack runs the model in eval mode"
    assert model.training, "train mode is restored"
    assert all(p.grad is None for p in model.parameters()), "no parameter gradient from the attack"
    assert all(p.requires_grad for p in model.parameters())
    assert torch.equal(model.fc.weight, before)

    model.inputs.clear(), model.modes.clear()
    loss = get_method("smoothadv").loss(model, x, y, ctx(num_steps=3, num_noise_vec=2))
    assert model.modes == [False, False, False, True], "T attack forwards in eval, one training forward in train"
    loss.backward()
    assert model.fc.weight.grad is not None and model.fc.weight.grad.abs().sum() > 0


# -- the training objective ---------------------------------------------------------------------------

@pytest.mark.parametrize("m, epoch", [(1, 0), (4, 3)])
def test_training_loss_is_mean_ce_on_x_plus_delta_plus_the_attack_noise(m, epoch):
    steps, eps = 3, 512 / 256
    model, (x, y) = Recorder(), batch()
    torch.manual_seed(5)
    loss = get_method("smoothadv").loss(model, x, y, ctx(epoch, epsilon=eps, num_steps=steps, num_noise_vec=m))
    assert len(model.inputs) == steps + 1 and model.inputs[-1].shape[0] == m * len(x)
    trained_on = model.inputs[-1]

    torch.manual_seed(5)
    noise = torch.randn(m * len(x), 3, 4, 4) * SIGMA  # noise-major: row i*B + j is draw i of image j
    eps_t = min(eps, (epoch + 1) * eps / 10)
    delta = pgd_l2_smoothed(model, x, y, noise, eps=eps_t, steps=steps, m=m)
    rows = torch.cat([x + delta + noise[i * len(x):(i + 1) * len(x)] for i in range(m)])
    expected = F.cross_entropy(model.fc(rows.flatten(1)), y.repeat(m))
    assert torch.allclose(trained_on, rows, atol=1e-6), "the attack's noise is reused for training"
    assert torch.allclose(loss, expected, atol=1e-6)


# -- hyper-parameters, recipe, registration ------------------------------------------------------------

def test_per_sigma_defaults_are_salmans_best_models():
    spec = get_method("smoothadv")
    for sigma, (eps, steps, m) in {0.25: (255 / 256, 10, 8), 0.5: (2.0, 10, 2), 1.0: (2.0, 10, 2)}.items():
        hp = spec.make_hparams(sigma=sigma)
        assert (hp.epsilon, hp.num_steps, hp.num_noise_vec, hp.warmup) == (eps, steps, m, 10)
        assert spec.steps_per_batch(hp) == m, "one optimizer step per minibatch of B/m images"
    assert spec.make_hparams(sigma=0.25).epsilon == pytest.approx(0.99609375)  # 255 / 256, not 255 / 255
    assert SmoothAdvHParams() == SmoothAdvHParams.for_sigma(0.25)
    assert SmoothAdvHParams.for_sigma(0.12) == SmoothAdvHParams.for_sigma(0.25), "nearest listed sigma"
    assert SmoothAdvHParams.for_sigma(2.0) == SmoothAdvHParams.for_sigma(1.0)
    assert spec.steps_per_batch(spec.make_hparams({"num_noise_vec": "4"})) == 4


def test_both_published_sigma_025_models_are_named_and_m4_stays_selectable():
    spec = get_method("smoothadv")
    paper = spec.make_hparams(sigma=0.25)
    other = spec.make_hparams({"m": "4"}, sigma=0.25)  # the paper's symbol for num_noise_vec
    assert (paper.num_noise_vec, other.num_noise_vec, other.num_steps) == (8, 4, 10)
    assert "0.551" in paper.label() and "CRT paper's timed" in paper.label()
    assert "m=4" in other.label() and "0.544" in other.label() and "not the one" in other.label()
    assert "ACR" not in spec.make_hparams({"T": "3"}, sigma=0.25).label(), "an unpublished config claims no ACR"
    doc = sys.modules[SmoothAdvHParams.__module__].__doc__
    assert "ACR 0.551" in doc and "ACR 0.544" in doc, "the docstring lists both published models"
    with pytest.raises(CrtBenchError, match="no hyper-parameter 'k'"):
        spec.make_hparams({"k": "4"})


def test_warmup_schedule():
    assert [warmup_epsilon(2.0, e, 10) for e in (0, 1, 8, 9, 10, 149)] == pytest.approx([0.2, 0.4, 1.8, 2.0, 2.0, 2.0])
    assert warmup_epsilon(2.0, 0, 1) == 2.0


def test_recipe_is_salmans_cifar_grid():
    r = get_method("smoothadv").recipe
    assert (r.epochs, r.batch_size, r.lr, r.milestones, r.gamma, r.momentum, r.weight_decay) == (
        150, 256, 0.1, (50, 100), 0.1, 0.9, 1e-4)
    assert "Salman" in get_method("smoothadv").reference


@pytest.mark.parametrize("key, value", [("epsilon", "-0.1"), ("epsilon", "nan"), ("num_steps", "0"),
                                        ("num_noise_vec", "0"), ("warmup", "0")])
def test_invalid_hparams_are_clear_errors(key, value):
    with pytest.raises(CrtBenchError, match=key):
        get_method("smoothadv").make_hparams({key: value})


def test_zero_epsilon_is_allowed_and_leaves_images_unperturbed():
    model, (x, y) = Recorder(), batch()
    delta = pgd_l2_smoothed(model, x, y, noise_like_replicas(x, 2, SIGMA), eps=0.0, steps=2, m=2)
    assert torch.equal(delta, torch.zeros_like(x))


# -- end to end -----------------------------------------------------------------------------------

def test_smoke_run_trains_and_certifies(tmp_path):
    cfg = resolve_run_config("smoothadv", "tiny_cnn", profile="smoke", epochs=1, train_limit=128, device="cpu",
                             hparams={"m": "4"})  # Salman's other sigma-0.25 model: half the steps of the default
    assert cfg.hparams == {"epsilon": 255 / 256, "num_steps": 10, "num_noise_vec": 4, "warmup": 10}
    store = ResultsStore(tmp_path)
    run_id = train_run(cfg, store, progress=False)
    epochs = store.read("epochs")
    assert len(epochs) == 1 and math.isfinite(epochs["loss"].iloc[0])
    assert epochs["optimizer_steps"].iloc[0] == 4 * math.ceil(128 / cfg.batch_size), "m steps per loader batch"
    _, rows = certify_run(run_id, store, CertifyConfig(n0=20, n=100, alpha=0.001, batch=100, subset="range:0:4"),
                          device="cpu", progress=False)
    assert len(rows) == 4 and set(rows["run_id"]) == {run_id}
    assert_not_all_abstained(rows)
    assert rows["radius"].ge(0).all()
