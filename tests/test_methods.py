"""Methods: the defining properties of the Gaussian and CRT objectives, and the registry contract."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F
from helpers import Recorder

from crt_bench.core.errors import CrtBenchError
from crt_bench.methods.crt import transfer_distance
from crt_bench.methods.registry import StepContext, get_method, list_methods

SIGMA = 0.5




def batch(n=6):
    g = torch.Generator().manual_seed(1)
    return torch.rand(n, 3, 4, 4, generator=g), torch.randint(0, 5, (n,), generator=g)


def crt_ctx(teacher, **hp):
    spec = get_method("crt")
    return StepContext(sigma=SIGMA, hparams=spec.make_hparams(hp), teacher=teacher)


def test_registry_lists_both_with_references():
    names = [m.name for m in list_methods()]
    assert {"gaussian", "crt"} <= set(names)
    assert all(m.reference for m in list_methods())
    assert get_method("crt").needs_teacher and not get_method("gaussian").needs_teacher


def test_crt_recipe_is_the_official_one():
    r = get_method("crt").recipe
    assert (r.epochs, r.batch_size, r.lr, r.milestones, r.gamma, r.momentum, r.weight_decay) == (
        200, 128, 0.1, (100, 150), 0.1, 0.9, 1e-4)


def test_unknown_method_lists_valid_names():
    with pytest.raises(CrtBenchError, match="gaussian"):
        get_method("smoothadvv")


def test_gaussian_loss_is_cross_entropy_on_one_noisy_draw():
    model, (x, y) = Recorder(0), batch()
    torch.manual_seed(7)
    loss = get_method("gaussian").loss(model, x, y, StepContext(sigma=SIGMA, hparams=None))
    torch.manual_seed(7)
    noisy = x + torch.randn_like(x) * SIGMA
    assert torch.allclose(model.inputs[0], noisy)
    assert torch.allclose(loss, F.cross_entropy(model.fc(noisy.flatten(1)), y))


def test_crt_teacher_and_student_see_the_same_noisy_input():
    student, teacher, (x, y) = Recorder(0), Recorder(1), batch()
    get_method("crt").loss(student, x, y, crt_ctx(teacher))
    assert len(student.inputs) == len(teacher.inputs) == 1
    assert torch.equal(student.inputs[0], teacher.inputs[0])
    noise = student.inputs[0] - x
    assert 0.35 < noise.std().item() < 0.65, "noise is N(0, sigma^2) in pixel space, one draw per image"


def test_crt_loss_is_batch_mean_of_unsquared_logit_l2():
    student, teacher, (x, y) = Recorder(0), Recorder(1), batch()
    torch.manual_seed(3)
    loss = get_method("crt").loss(student, x, y, crt_ctx(teacher))
    noisy = student.inputs[0]
    expected = (student.fc(noisy.flatten(1)) - teacher.fc(noisy.flatten(1))).pow(2).sum(1).sqrt().mean()
    assert torch.allclose(loss, expected)


def test_crt_loss_of_a_constant_logit_offset_is_its_norm():
    s = torch.randn(8, 5)
    offset = torch.tensor([3.0, 0.0, 4.0, 0.0, 0.0])
    assert torch.allclose(transfer_distance(s + offset, s), torch.tensor(5.0))  # not 25: unsquared
    assert transfer_distance(s, s).item() == 0.0


def test_crt_gradient_reaches_the_student_only():
    student, teacher, (x, y) = Recorder(0), Recorder(1), batch()
    teacher.eval().requires_grad_(False)
    loss = get_method("crt").loss(student, x, y, crt_ctx(teacher))
    loss.backward()
    assert student.fc.weight.grad is not None and student.fc.weight.grad.abs().sum() > 0
    assert teacher.fc.weight.grad is None


def test_crt_teacher_output_carries_no_graph_even_if_teacher_requires_grad():
    student, teacher, (x, y) = Recorder(0), Recorder(1), batch()  # teacher left trainable on purpose
    get_method("crt").loss(student, x, y, crt_ctx(teacher)).backward()
    assert teacher.fc.weight.grad is None


def test_crt_ce_weight_mixes_cross_entropy():
    student, teacher, (x, y) = Recorder(0), Recorder(1), batch()
    torch.manual_seed(5)
    pure_ce = get_method("crt").loss(student, x, y, crt_ctx(teacher, ce_weight=1.0))
    noisy = student.inputs[0]
    assert torch.allclose(pure_ce, F.cross_entropy(student.fc(noisy.flatten(1)), y))
    torch.manual_seed(5)
    half = get_method("crt").loss(student, x, y, crt_ctx(teacher, ce_weight=0.5))
    transfer = transfer_distance(student.fc(noisy.flatten(1)), teacher.fc(noisy.flatten(1)))
    assert torch.allclose(half, 0.5 * transfer + 0.5 * pure_ce)


def test_crt_softmax_distance_option():
    s, t = torch.randn(4, 5), torch.randn(4, 5)
    expected = (s.softmax(1) - t.softmax(1)).norm(dim=1).mean()
    assert torch.allclose(transfer_distance(s, t, "softmax_l2"), expected)
    assert transfer_distance(s, t, "softmax_l2") < transfer_distance(s, t)  # probabilities are bounded


def test_crt_without_teacher_is_a_clear_error():
    with pytest.raises(CrtBenchError, match="teacher"):
        get_method("crt").loss(Recorder(0), *batch(), crt_ctx(None))


def test_hparam_overrides_are_typed_and_validated():
    spec = get_method("crt")
    hp = spec.make_hparams({"ce_weight": "0.25", "distance": "softmax_l2"})
    assert dataclasses.asdict(hp) == {"ce_weight": 0.25, "distance": "softmax_l2"}
    with pytest.raises(CrtBenchError, match="no hyper-parameter 'temperature'"):
        spec.make_hparams({"temperature": "2"})
    with pytest.raises(CrtBenchError, match="ce_weight"):
        spec.make_hparams({"ce_weight": "1.5"})
    with pytest.raises(CrtBenchError, match="distance"):
        spec.make_hparams({"distance": "kl"})
    with pytest.raises(CrtBenchError, match="not a valid float"):
        spec.make_hparams({"ce_weight": "lots"})


def test_noise_built_in_place_has_the_two_step_values_and_gradients():
    """gaussian_noise / noisy_replicas / add_replicated: the official ``x + randn * sigma`` and
    ``x.repeat(m) + noise``, without their temporaries (same draws, same values, same input gradient)."""
    from crt_bench.methods.common import add_replicated, gaussian_noise, noisy_replicas, replicate
    x, _ = batch()
    torch.manual_seed(3)
    expected = x + torch.randn_like(x) * SIGMA
    torch.manual_seed(3)
    assert torch.equal(gaussian_noise(x, SIGMA), expected)
    torch.manual_seed(4)
    expected = replicate(x, 3) + torch.randn(3 * len(x), *x.shape[1:]) * SIGMA
    torch.manual_seed(4)
    got = noisy_replicas(x, 3, SIGMA)
    assert torch.equal(got, expected)
    noise = torch.randn(3 * len(x), *x.shape[1:])
    a, b = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    weights = torch.rand_like(noise)
    (add_replicated(a, noise) * weights).sum().backward()
    ((replicate(b, 3) + noise) * weights).sum().backward()
    assert torch.equal(add_replicated(x, noise), replicate(x, 3) + noise)
    torch.testing.assert_close(a.grad, b.grad)
