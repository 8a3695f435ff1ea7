"""No method's training step turns a Python number into a device tensor or reads a tensor back to the host.

On a GPU, ``torch.tensor(0.5, device="cuda")`` / ``torch.as_tensor`` is a blocking host-to-device copy
and ``.item()`` / ``float(t)`` / ``bool(t)`` waits for the GPU; inside an attack loop that is tens of
waits per loader batch (SmoothAdv's L2 projection built one per attack step). The check runs one
loader batch of every registered method through the training step (loss, attacks, backward, SGD) on
CPU, where the same calls are made, and records:

* Python-level calls (a function mode): ``torch.tensor`` / ``torch.as_tensor`` / ``torch.asarray`` /
  ``torch.scalar_tensor`` given Python data, and ``.item()`` / ``float()`` / ``int()`` / ``bool()`` of a
  tensor;
* operators from anywhere, torch's own C++ included (a dispatch mode): ``lift_fresh`` (a tensor made
  from Python data) and ``_local_scalar_dense`` (any tensor-to-Python read).

(torch's backward formulas build zeros with ``at::scalar_tensor``: on a GPU that is an allocation and
a fill kernel, no copy and no wait, and it is not counted.)
"""
from __future__ import annotations

from contextlib import ExitStack

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from crt_bench.methods.common import project_l2
from crt_bench.methods.registry import StepContext, get_method, list_methods
from crt_bench.models.build import build_model
from crt_bench.train.step import TrainStep
from crt_bench.train.teacher import FrozenTeacher

CPU = torch.device("cpu")
FACTORIES = {torch.tensor, torch.as_tensor, torch.asarray, torch.scalar_tensor}
READ_BACKS = {torch.Tensor.item, torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__,
              torch.Tensor.tolist}
OPERATORS = ("aten.lift_fresh", "aten._local_scalar_dense")


class _Calls(TorchFunctionMode):
    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in READ_BACKS or (func in FACTORIES and args and not isinstance(args[0], torch.Tensor)):
            self.calls.append(func.__name__)
        return func(*args, **(kwargs or {}))


class _Operators(TorchDispatchMode):
    def __init__(self, calls: list[str]) -> None:
        super().__init__()
        self.calls = calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if str(func).startswith(OPERATORS):
            self.calls.append(str(func))
        return func(*args, **(kwargs or {}))


class HostTraffic(ExitStack):
    """Records what builds a device tensor from Python data or reads a tensor back to the host."""

    def __enter__(self) -> "HostTraffic":
        super().__enter__()
        self.calls: list[str] = []
        self.enter_context(_Calls(self.calls))
        self.enter_context(_Operators(self.calls))
        return self


def test_the_recorder_sees_what_it_must_catch() -> None:
    x = torch.rand(3)
    with HostTraffic() as traffic:
        torch.as_tensor(0.5, device=x.device)
        torch.tensor(1.0)
        torch.scalar_tensor(2.0)
        x.sum().item()
        float(x.max())
    assert traffic.calls == ["as_tensor", "aten.lift_fresh.default", "tensor", "aten.lift_fresh.default",
                             "scalar_tensor", "item", "aten._local_scalar_dense.default", "__float__",
                             "aten._local_scalar_dense.default"]


@pytest.mark.parametrize("method", [spec.name for spec in list_methods()])
def test_one_training_step_has_no_host_traffic(method: str) -> None:
    spec = get_method(method)
    shape = dict(num_classes=10, in_chans=3, mean=[0.5] * 3, std=[0.25] * 3)
    torch.manual_seed(0)
    model = build_model("tiny_cnn", **shape).train()
    teacher = FrozenTeacher(build_model("tiny_cnn", **shape), (3, 8, 8), CPU) if spec.needs_teacher else None
    hp = spec.make_hparams(sigma=0.25)
    if spec.compose is not None:  # a denoiser in front of the (frozen) classifier
        model, _ = spec.compose(model, hp, sigma=0.25, profile="smoke", dataset="synthetic", results_root="")
        model.train()
    ctx = StepContext(sigma=0.25, hparams=hp, epoch=spec.recipe.epochs - 1, epochs=spec.recipe.epochs,
                      teacher=teacher)
    step = TrainStep(spec, model, torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9), ctx, CPU)
    x, y = torch.rand(2 * step.chunks, 3, 8, 8), torch.randint(0, 10, (2 * step.chunks,))
    step(x, y)  # the momentum buffers exist from here on, as in every later step
    with HostTraffic() as traffic:
        loss = step(x, y)
    assert traffic.calls == [], f"{method}: {traffic.calls}"
    assert torch.isfinite(loss)


def test_project_l2_takes_python_and_tensor_radii_alike() -> None:
    delta = torch.randn(4, 3, 2, 2)
    norms = delta.flatten(1).norm(dim=1)
    radius = float(norms.min()) * 1.5
    with HostTraffic() as traffic:
        by_float = project_l2(delta, radius)
    assert traffic.calls == []
    by_tensor = project_l2(delta, torch.tensor(radius, dtype=torch.float64))
    per_example = project_l2(delta, torch.full((4, 1, 1, 1), radius))
    expected = delta * torch.clamp(radius / norms, max=1.0).view(-1, 1, 1, 1)
    for got in (by_float, by_tensor, per_example):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert torch.allclose(by_float.flatten(1).norm(dim=1), torch.clamp(norms, max=radius), atol=1e-6)


def test_the_trainers_batches_and_step_have_no_host_traffic_and_draw_on_the_datas_device() -> None:
    """The trainer's own path (crt_bench.data.batches.epoch_batches, augmented, then the step): the epoch's
    permutation and each batch's crops and flips come from a generator on the data's device (no host copy per
    batch on a GPU); on the CPU the same seed gives the same batches, another seed others."""
    from crt_bench.data.batches import epoch_batches
    from crt_bench.data.catalog import dataset_info
    from crt_bench.data.split import Split

    spec = get_method("gaussian")
    torch.manual_seed(0)
    split = Split(torch.rand(48, 3, 8, 8), torch.randint(0, 10, (48,)), dataset_info("synthetic"))
    sampler, generator = epoch_batches(split, 16, augment=True, seed=3)
    assert generator.device == split.x.device
    model = build_model("tiny_cnn", num_classes=10, in_chans=3, mean=[0.5] * 3, std=[0.25] * 3).train()
    hp = spec.make_hparams(sigma=0.25)
    ctx = StepContext(sigma=0.25, hparams=hp, epoch=0, epochs=spec.recipe.epochs)
    step = TrainStep(spec, model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9), ctx, CPU)
    batches = iter(sampler)
    step(*next(batches))
    with HostTraffic() as traffic:
        x, y = next(batches)
        loss = step(x, y)
    assert traffic.calls == [], traffic.calls
    assert torch.isfinite(loss)
    again = [b for b, _ in epoch_batches(split, 16, augment=True, seed=3)[0]]
    other = [b for b, _ in epoch_batches(split, 16, augment=True, seed=4)[0]]
    first = [b for b, _ in epoch_batches(split, 16, augment=True, seed=3)[0]]
    assert all(torch.equal(a, b) for a, b in zip(again, first))
    assert not all(torch.equal(a, b) for a, b in zip(again, other))
