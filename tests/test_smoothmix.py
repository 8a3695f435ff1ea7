"""SmoothMix (Jeong et al. 2021): the attack, the mixup geometry and soft labels, the correctness indicator,
the full objective against an independent recomputation, the registry entry, and an end-to-end run."""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import Recorder, train_and_certify_smoke
from torch import nn

import crt_bench.methods.smoothmix  # noqa: F401  (registers "smoothmix")
from crt_bench.config.schedule import lr_at_epoch
from crt_bench.core.errors import CrtBenchError
from crt_bench.methods.registry import StepContext, get_method
from crt_bench.methods.common import noise_like_replicas, smoothed_nll
from crt_bench.methods.smoothmix import mix, mix_kl, smoothmix_pgd, warmup_factor
from crt_bench.train.resolve import resolve_run_config

SIGMA, C = 0.25, 5




def batch(n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    # inside [0.25, 0.75] so that small attack steps never touch the [0, 1] box
    return 0.25 + 0.5 * torch.rand(n, 3, 4, 4, generator=g), torch.randint(0, C, (n,), generator=g)


def l2(t):
    return t.flatten(1).norm(dim=1)


def one_step_adversary(model, x, y, noises, m, alpha):
    """adv_1 = clip(x + alpha * g / (||g|| + 1e-8)), g the gradient of the summed smoothed NLL at x."""
    adv = x.clone().requires_grad_(True)
    loss = smoothed_nll(model.fc(adv.repeat(m, 1, 1, 1).add(noises).flatten(1)), y, m, reduction="sum")
    (g,) = torch.autograd.grad(loss, adv)
    return (x + alpha * g / (l2(g).view(-1, 1, 1, 1) + 1e-8)).clamp(0, 1)


def test_attack_increases_the_smoothed_nll():
    model, (x, y) = Recorder(), batch()
    noises = noise_like_replicas(x, 4, SIGMA)
    _, adv = smoothmix_pgd(model, x, y, noises, m=4, steps=4, alpha=0.2, mix_step=0, maxnorm_s=0.0)

    def nll(inp):
        return smoothed_nll(model(inp.repeat(4, 1, 1, 1) + noises), y, 4, reduction="none")

    with torch.no_grad():
        assert (nll(adv) > nll(x) + 1e-4).all()
    assert torch.allclose(l2(adv - x), torch.full((6,), 0.8), atol=0.05), "T steps of L2 length alpha"


def test_mix_step_0_gives_clean_x_and_mix_step_1_the_projected_one_step_adversary():
    model, (x, y) = Recorder(), batch()
    noises = noise_like_replicas(x, 2, SIGMA)
    x_init, _ = smoothmix_pgd(model, x, y, noises, m=2, steps=3, alpha=0.5, mix_step=0, maxnorm_s=0.0)
    assert torch.equal(x_init, x)
    alpha, w = 0.3, 0.4
    x_init, adv = smoothmix_pgd(model, x, y, noises, m=2, steps=3, alpha=alpha, mix_step=1, maxnorm_s=alpha * 1 * w)
    adv1 = one_step_adversary(model, x, y, noises, 2, alpha)
    assert torch.allclose(l2(adv1 - x), torch.full((6,), alpha), atol=1e-5)
    expected = x + (adv1 - x) * w  # the one-step adversary (norm alpha) renormalised to radius alpha * w
    assert torch.allclose(x_init, expected, atol=1e-5)
    assert torch.allclose(l2(x_init - x), torch.full((6,), alpha * w), atol=1e-5)
    assert not torch.allclose(adv, adv1), "adv_T keeps going after the mix step"
    # unwarmed (w = 1): x_init is the one-step adversary itself
    x_init, _ = smoothmix_pgd(model, x, y, noises, m=2, steps=3, alpha=alpha, mix_step=1, maxnorm_s=alpha)
    assert torch.allclose(x_init, adv1, atol=1e-5)


def test_attack_freezes_the_model_and_restores_it():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, C)).train()
    model[4].bias.requires_grad_(False)  # a user-frozen parameter must stay frozen
    flags = [p.requires_grad for p in model.parameters()]
    stats = model[2].running_mean.clone()
    x, y = batch()
    smoothmix_pgd(model, x, y, noise_like_replicas(x, 2, SIGMA), m=2, steps=3, alpha=0.5, mix_step=1, maxnorm_s=0.5)
    assert model.training and all(mod.training for mod in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters()), "the attack must not accumulate parameter gradients"
    assert torch.equal(model[2].running_mean, stats), "attack forwards run in eval mode (no BN-statistics update)"


def test_mix_lies_on_the_segment_and_targets_are_the_soft_label():
    torch.manual_seed(0)
    x_init, adv = torch.rand(8, 3, 4, 4), torch.rand(8, 3, 4, 4)
    p_hat = torch.softmax(torch.randn(8, C), dim=1)
    lam = torch.rand(8) / 2
    x_mix, y_mix = mix(x_init, adv, p_hat, lam, C)
    assert torch.allclose(x_mix - x_init, lam.view(-1, 1, 1, 1) * (adv - x_init), atol=1e-6)
    assert torch.allclose(y_mix, (1 - lam[:, None]) * p_hat + lam[:, None] * torch.full((1, C), 1 / C), atol=1e-6)
    assert torch.allclose(y_mix.sum(1), torch.ones(8), atol=1e-6)
    x0, y0 = mix(x_init, adv, p_hat, torch.zeros(8), C)
    assert torch.equal(x0, x_init) and torch.allclose(y0, p_hat)


def test_indicator_zeroes_the_mixup_loss_of_misclassified_examples():
    torch.manual_seed(0)
    m, B = 2, 4
    p_hat = torch.softmax(torch.randn(B, C) * 3, dim=1)
    pred = p_hat.argmax(1)
    y = torch.where(torch.tensor([True, False, True, False]), pred, (pred + 1) % C)
    logits_mix = torch.randn(m * B, C, requires_grad=True)
    y_mix = torch.softmax(torch.randn(B, C), dim=1)
    loss = mix_kl(logits_mix, y_mix, p_hat, y, m)
    kl = (y_mix.repeat(m, 1) * (y_mix.repeat(m, 1).log() - F.log_softmax(logits_mix, 1))).sum(1)
    keep = torch.tensor([1.0, 0, 1, 0]).repeat(m)
    assert torch.allclose(loss, (keep * kl).sum() / (m * B), atol=1e-6), "mean over all m*B rows"
    loss.backward()
    assert torch.equal(logits_mix.grad[keep == 0], torch.zeros(m * B // 2, C))
    assert logits_mix.grad[keep == 1].abs().sum() > 0
    assert mix_kl(logits_mix, y_mix, p_hat, (pred + 1) % C, m) == 0


@pytest.mark.parametrize("mix_step", [0, 1])
def test_loss_matches_an_independent_recomputation(mix_step):
    model, (x, _) = Recorder(), batch(6)
    y = torch.tensor([0, 0, 0, 1, 2, 3])  # the model below predicts class 0: three kept, three dropped
    m, steps, alpha, eta, epoch = 2, 3, 0.4, 5.0, 1
    hp = get_method("smoothmix").make_hparams({"m": m, "steps": steps, "alpha": alpha, "eta": eta,
                                               "mix_step": mix_step, "warmup": 10})
    with torch.no_grad():  # small weights (a non-zero attack gradient) and a bias toward class 0
        model.fc.weight.mul_(0.2)
        model.fc.bias.copy_(torch.tensor([3.0, 0, 0, 0, 0]))
    loss = get_method("smoothmix").loss(model, x, y, StepContext(sigma=SIGMA, hparams=hp, epoch=epoch, epochs=20))
    w = 0.2  # (epoch + 1) / warmup
    assert len(model.inputs) == steps + 2, "T attack forwards, then the clean and the mixed forward"
    noises = model.inputs[0] - x.repeat(m, 1, 1, 1)  # the attack starts at x (no random start)
    assert 0.15 < noises.std().item() < 0.35
    for inp in model.inputs[1:]:
        assert torch.allclose(inp[:6] - inp[6:], noises[:6] - noises[6:], atol=1e-6), "noises shared throughout"
    x_init = (model.inputs[steps] - noises)[:6]  # "clean" side: x_init + delta_i (official code)
    x_mix = (model.inputs[steps + 1] - noises)[:6]
    _, adv = smoothmix_pgd(model, x, y, noises, m, steps, alpha, mix_step, alpha * mix_step * w)
    if mix_step == 0:
        assert torch.allclose(x_init, x, atol=1e-6)
    else:
        adv1 = one_step_adversary(model, x, y, noises, m, alpha)
        assert torch.allclose(x_init, x + (adv1 - x) * w, atol=1e-5)
    # x_mix = x_init + lam (adv_T - x_init), lam in [0, 1/2]
    d, a = (x_mix - x_init).flatten(1), (adv - x_init).flatten(1)
    lam = (d * a).sum(1) / (a * a).sum(1)
    assert torch.allclose(d, lam[:, None] * a, atol=1e-5)
    assert ((lam >= 0) & (lam <= 0.5)).all()
    # the objective, in float64 from the recorded inputs
    W, b = model.fc.weight.double(), model.fc.bias.double()
    z = model.inputs[steps].flatten(1).double() @ W.T + b
    z_mix = model.inputs[steps + 1].flatten(1).double() @ W.T + b
    p_hat = z.softmax(1).view(m, 6, C).mean(0)
    y_mix = (1 - lam.double()[:, None]) * p_hat + lam.double()[:, None] / C
    keep = (p_hat.argmax(1) == y).double()
    assert torch.equal(keep, torch.tensor([1.0, 1, 1, 0, 0, 0], dtype=torch.float64))
    kl = (y_mix.repeat(m, 1) * (y_mix.repeat(m, 1).log() - z_mix.log_softmax(1))).sum(1)
    expected = F.cross_entropy(z, y.repeat(m)) + eta * w * (keep.repeat(m) * kl).mean()
    assert torch.allclose(loss.double(), expected, atol=1e-5)


def test_warmup_factor():
    assert [warmup_factor(e, 10) for e in (0, 4, 9, 10, 149)] == [0.1, 0.5, 1.0, 1.0, 1.0]


def test_registry_entry_defaults_and_post_epoch_schedule():
    spec = get_method("smoothmix")
    assert spec.steps_per_batch(spec.make_hparams({"m": 4})) == 4
    per_sigma = {s: spec.make_hparams(sigma=s) for s in (0.25, 0.5, 1.0)}
    assert {s: (hp.alpha, hp.mix_step) for s, hp in per_sigma.items()} == {0.25: (0.5, 0), 0.5: (1.0, 1),
                                                                           1.0: (2.0, 1)}
    assert all((hp.m, hp.steps, hp.eta, hp.warmup) == (2, 4, 5.0, 10) for hp in per_sigma.values())
    r = spec.recipe
    assert (r.epochs, r.batch_size, r.lr, r.gamma, r.momentum, r.weight_decay) == (150, 256, 0.1, 0.1, 0.9, 1e-4)
    lrs = {e: lr_at_epoch(r.lr, r.milestones, r.gamma, e) for e in (50, 51, 100, 101)}
    assert all(math.isclose(lrs[e], v) for e, v in {50: 0.1, 51: 0.01, 100: 0.01, 101: 0.001}.items()), lrs


@pytest.mark.parametrize("overrides, needle", [
    ({"m": 0}, "m "), ({"steps": 0, "mix_step": 0}, "steps"), ({"alpha": 0.0}, "alpha"), ({"eta": -1.0}, "eta"),
    ({"mix_step": 4}, "mix_step"), ({"mix_step": -1}, "mix_step"), ({"warmup": 0}, "warmup"),
])
def test_invalid_hparams_are_rejected(overrides, needle):
    with pytest.raises(CrtBenchError, match=needle):
        get_method("smoothmix").make_hparams(overrides)


def test_smoke_train_and_certify(tmp_path):
    cfg = resolve_run_config("smoothmix", "tiny_cnn", profile="smoke", sigma=0.5, epochs=1, train_limit=128,
                             device="cpu")
    assert (cfg.hparams["alpha"], cfg.hparams["mix_step"]) == (1.0, 1)
    train_and_certify_smoke(cfg, tmp_path, steps_per_epoch=2 * 2)  # 128 images / batch 64 = 2 batches x m = 2
