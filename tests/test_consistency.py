"""Consistency regularization (Jeong & Shin 2020): the defining properties of the objective, the registry
entry (per-sigma defaults, post-epoch schedule, m optimizer steps per loader batch), and an end-to-end run."""
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import Recorder, train_and_certify_smoke

import crt_bench.methods.consistency  # noqa: F401  (registers "consistency")
from crt_bench.config.schedule import lr_at_epoch
from crt_bench.core.errors import CrtBenchError
from crt_bench.methods.consistency import consistency_regularizer, entropy, kl_div_sum
from crt_bench.methods.registry import StepContext, get_method
from crt_bench.train.resolve import resolve_run_config

SIGMA, C = 0.5, 5




def batch(n=6):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 4, 4, generator=g), torch.randint(0, C, (n,), generator=g)


def literal_regularizer(logits: torch.Tensor, m: int, lbd: float, eta: float) -> torch.Tensor:
    """The paper's formula with explicit loops in float64 (noise-major rows: row i*B + b is draw i of image b)."""
    logits = logits.double()
    B, n_cls = logits.shape[0] // m, logits.shape[1]
    total = logits.new_zeros(())
    for b in range(B):
        probs = [torch.softmax(logits[i * B + b], dim=0) for i in range(m)]
        p_hat = sum(probs) / m
        kl = sum(sum(p_hat[c] * (torch.log(p_hat[c]) - torch.log(probs[i][c])) for c in range(n_cls))
                 for i in range(m)) / m
        ent = -sum(p_hat[c] * torch.log(p_hat[c].clamp_min(1e-20)) for c in range(n_cls))
        total = total + lbd * kl + eta * ent
    return total / B


def test_identical_predictions_leave_only_the_entropy_term():
    z = torch.randn(4, C)
    logits = z.repeat(3, 1)  # every noise draw gives the same logits
    p = z.softmax(dim=1)
    assert torch.allclose(kl_div_sum(logits, p.repeat(3, 1)), torch.zeros(12), atol=1e-6)
    reg = consistency_regularizer(logits, m=3, lbd=20.0, eta=0.5)
    assert torch.allclose(reg, 0.5 * entropy(p).mean(), atol=1e-6)
    assert torch.allclose(consistency_regularizer(logits, m=3, lbd=20.0, eta=0.0), torch.zeros(()), atol=1e-6)


def test_regularizer_equals_literal_computation():
    torch.manual_seed(0)
    logits = torch.randn(3 * 4, C) * 2  # m = 3 draws of B = 4 images
    got = consistency_regularizer(logits, m=3, lbd=7.0, eta=0.3)
    assert torch.allclose(got.double(), literal_regularizer(logits, 3, 7.0, 0.3), atol=1e-5)
    assert got > 0  # KL >= 0 and H >= 0
    # kl_div_sum is F.kl_div(log_softmax, target) summed over classes (the official form)
    p = torch.softmax(torch.randn(12, C), dim=1)
    assert torch.allclose(kl_div_sum(logits, p), F.kl_div(F.log_softmax(logits, 1), p, reduction="none").sum(1),
                          atol=1e-6)


def test_gradient_flows_through_p_hat():
    torch.manual_seed(0)
    logits = (torch.randn(2 * 3, C) * 2).requires_grad_(True)
    (grad,) = torch.autograd.grad(consistency_regularizer(logits, 2, 10.0, 0.5), logits)

    def detached_target(z):
        p_hat = z.softmax(1).view(2, 3, C).mean(0)
        kl = kl_div_sum(z, p_hat.detach().repeat(2, 1)).view(2, 3).mean(0)
        return (10.0 * kl + 0.5 * entropy(p_hat)).mean()

    (grad_detached,) = torch.autograd.grad(detached_target(logits), logits)
    assert (grad - grad_detached).abs().max() > 1e-3, "p_hat must not be detached"
    z64 = logits.detach().double().requires_grad_(True)
    (grad_literal,) = torch.autograd.grad(literal_regularizer(z64, 2, 10.0, 0.5), z64)
    assert torch.allclose(grad.double(), grad_literal, atol=1e-5)


def test_kl_gradient_is_finite_when_a_class_probability_underflows():
    logits = torch.tensor([[0.0, -200.0], [0.0, -200.0]], requires_grad=True)  # p_hat[1] == 0 in float32
    consistency_regularizer(logits, 2, 10.0, 0.5).backward()
    assert torch.isfinite(logits.grad).all()


def test_loss_is_ce_over_all_noisy_rows_plus_regularizer():
    model, (x, y) = Recorder(), batch(6)
    hp = get_method("consistency").make_hparams({"m": 3, "lbd": 4.0, "eta": 0.25})
    loss = get_method("consistency").loss(model, x, y, StepContext(sigma=SIGMA, hparams=hp))
    assert len(model.inputs) == 1, "the m noisy copies go through the model in one forward"
    noisy = model.inputs[0]
    assert noisy.shape == (18, 3, 4, 4)
    noise = (noisy - x.repeat(3, 1, 1, 1)).view(3, 6, -1)
    assert 0.35 < noise.std().item() < 0.65
    assert not torch.allclose(noise[0], noise[1]), "independent draws per copy"
    logits = model.fc(noisy.flatten(1)).double()
    ce = F.cross_entropy(logits, y.repeat(3))
    assert torch.allclose(loss.double(), ce + literal_regularizer(logits, 3, 4.0, 0.25), atol=1e-5)


def test_registry_entry_defaults_and_post_epoch_schedule():
    spec = get_method("consistency")
    assert spec.steps_per_batch(spec.make_hparams({"m": 3})) == 3
    assert spec.steps_per_batch(spec.make_hparams()) == 2
    assert {s: spec.make_hparams(sigma=s).lbd for s in (0.25, 0.5, 1.0)} == {0.25: 20.0, 0.5: 10.0, 1.0: 10.0}
    hp = spec.make_hparams(sigma=0.5)
    assert (hp.m, hp.eta) == (2, 0.5)
    r = spec.recipe
    assert (r.epochs, r.batch_size, r.lr, r.gamma, r.momentum, r.weight_decay) == (150, 256, 0.1, 0.1, 0.9, 1e-4)
    lrs = {e: lr_at_epoch(r.lr, r.milestones, r.gamma, e) for e in (0, 50, 51, 100, 101, 149)}
    expected = {0: 0.1, 50: 0.1, 51: 0.01, 100: 0.01, 101: 0.001, 149: 0.001}
    assert all(math.isclose(lrs[e], expected[e]) for e in expected), lrs


@pytest.mark.parametrize("key, value, needle", [("m", 0, "m "), ("lbd", -1.0, "lbd"), ("eta", -0.5, "eta")])
def test_invalid_hparams_are_rejected(key, value, needle):
    with pytest.raises(CrtBenchError, match=needle):
        get_method("consistency").make_hparams({key: value})


def test_smoke_train_and_certify(tmp_path):
    cfg = resolve_run_config("consistency", "tiny_cnn", profile="smoke", epochs=1, train_limit=128, device="cpu")
    assert cfg.hparams == {"m": 2, "lbd": 20.0, "eta": 0.5}
    train_and_certify_smoke(cfg, tmp_path, steps_per_epoch=2 * 2)  # 128 images / batch 64 = 2 batches x m = 2
