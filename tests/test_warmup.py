"""Compilation and warm-up stay out of every timed figure, and change no result.

Certification: before its first timed group, :func:`iter_certify` runs the engine's forward at every
batch shape the groups will use (a compiled model is compiled with static shapes, one graph each);
no noise is drawn, so rows are those of a run without the warm-up. Training: a compiled run first
takes steps whose every effect is undone, so the first epoch does not time the compiler and the
weights are those of a run without them.
"""
from __future__ import annotations

import pandas as pd
import pytest
import torch
from conftest import assert_same_weights, fast_config, state_dict_of

from crt_bench.certify.batching import forward_batch_sizes
from crt_bench.certify.driver import certify_dataset, iter_certify
from crt_bench.certify.smooth import Smooth
from crt_bench.methods.registry import StepContext, get_method
from crt_bench.models.files import MODEL_FILE
from crt_bench.store.store import ResultsStore
from crt_bench.train.step import TrainStep, warmup_batches
from crt_bench.train.trainer import train_run

CPU = torch.device("cpu")


def _model() -> torch.nn.Module:
    """Logits affine in the image (one 8x8 convolution + batch norm): the noise moves votes between classes."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 10, 8), torch.nn.BatchNorm2d(10), torch.nn.Flatten())
    with torch.no_grad():
        model[1].running_var.fill_(0.5)
    return model.eval()


def _data(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return torch.rand((n, 3, 8, 8), generator=generator), torch.randint(0, 10, (n,), generator=generator)


# 37 samples per image, batch 16: groups of 7 images (259 = 16 x 16 + 3) and 3 (111 = 6 x 16 + 15)
SETTINGS = dict(sigma=0.25, num_classes=10, n0=10, n=27, alpha=0.01, batch_size=16, progress=False)


def test_forward_batch_sizes_are_the_full_batch_and_each_calls_tail() -> None:
    assert forward_batch_sizes([7, 7, 3], 37, 16) == [16, 15, 3]
    assert forward_batch_sizes([2], 8, 16) == [16]  # exactly one batch
    assert forward_batch_sizes([1], 5, 16) == [5]  # never a full one
    assert forward_batch_sizes([], 5, 16) == []


@pytest.mark.parametrize("noise", ["keyed", "generator", "global"])
def test_certified_rows_are_the_same_with_and_without_the_warm_up(noise: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x, y = _data()
    calls: list[list[int]] = []
    model = _model()

    def certify(seed: int = 3) -> pd.DataFrame:
        torch.manual_seed(seed)
        extra = ({"seed": seed} if noise == "keyed" else
                 {"generator": torch.Generator().manual_seed(seed)} if noise == "generator" else {})
        return certify_dataset(model, x, y, indices=list(range(10)), **SETTINGS, **extra).drop(columns="seconds")

    real = Smooth.warm_up

    def recorded(self, image, batch_sizes):
        calls.append(list(batch_sizes))
        return real(self, image, batch_sizes)

    monkeypatch.setattr(Smooth, "warm_up", recorded)
    warmed = certify()
    assert calls[0] == [16, 15, 3]
    assert not warmed.equals(certify(seed=4)), "rows that depend on the noise they get"
    monkeypatch.setattr(Smooth, "warm_up", lambda self, image, batch_sizes: None)
    pd.testing.assert_frame_equal(warmed, certify())


class FakeCompiled:
    """Stands for ``torch.compile(model, dynamic=False)``: records each batch size it meets, and when."""

    def __init__(self, log: list[tuple[int, bool]], warming: list[bool]) -> None:
        self.log, self.warming = log, warming

    def wrap(self, model, dynamic=None, options=None):
        assert dynamic is False, "static shapes: the warm-up compiles every one"
        return lambda x: (self.log.append((x.shape[0], self.warming[0])), model(x))[1]


def test_a_compiled_certification_meets_every_batch_shape_in_the_warm_up_first(
        monkeypatch: pytest.MonkeyPatch) -> None:
    log: list[tuple[int, bool]] = []
    warming = [False]
    monkeypatch.setattr(torch, "compile", FakeCompiled(log, warming).wrap)
    real = Smooth.warm_up

    def flagged(self, image, batch_sizes):
        warming[0] = True
        try:
            return real(self, image, batch_sizes)
        finally:
            warming[0] = False

    monkeypatch.setattr(Smooth, "warm_up", flagged)
    x, y = _data()
    groups = list(iter_certify(_model(), x, y, indices=list(range(10)), seed=3, compile=True, **SETTINGS))
    assert sum(len(rows) for rows, _ in groups) == 10 and all(engine.compile for _, engine in groups)
    warmed = [size for size, during in log if during]
    timed = [size for size, during in log if not during]
    # A compiled engine pads a short last batch to the full size: one static shape, compiled in the warm-up.
    assert warmed == [16], "the warm-up comes first"
    assert timed and set(timed) == set(warmed), "no timed forward meets a shape the warm-up did not compile"
    assert log.index((16, False)) > max(i for i, (_, during) in enumerate(log) if during)


# -- training ----------------------------------------------------------------------------------------

def _bn_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10))


def _step(method: str) -> TrainStep:
    spec = get_method(method)
    model = _bn_net().train()
    ctx = StepContext(sigma=0.25, hparams=spec.make_hparams(sigma=0.25), epochs=1)
    return TrainStep(spec, model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), ctx, CPU)


@pytest.mark.parametrize("method", ["gaussian", "smoothmix"])
def test_warm_up_steps_are_undone(method: str) -> None:
    x, y = _data(8)
    plain, warmed = _step(method), _step(method)
    torch.manual_seed(7)
    plain(x, y)  # momentum buffers exist: the warm-up must put them back too
    torch.manual_seed(7)
    warmed(x, y)
    rng = torch.get_rng_state()
    seconds = warmed.warm_up(warmup_batches(x, y, 6))
    assert seconds > 0 and torch.equal(torch.get_rng_state(), rng) and warmed.ctx.step == plain.ctx.step
    for _ in range(2):
        plain(x, y)
    torch.set_rng_state(rng)
    for _ in range(2):
        warmed(x, y)
    assert_same_weights(plain.model.state_dict(), warmed.model.state_dict())  # batch-norm statistics included
    momentum = [plain.optimizer.state[p]["momentum_buffer"] for p in plain.model.parameters()]
    assert all(torch.equal(a, warmed.optimizer.state[p]["momentum_buffer"])
               for a, p in zip(momentum, warmed.model.parameters()))


def test_warmup_batches_have_each_shape_of_an_epoch() -> None:
    x, y = torch.zeros(10, 3, 4, 4), torch.zeros(10, dtype=torch.long)
    assert [len(b[0]) for b in warmup_batches(x, y, 4)] == [4, 2]
    assert [len(b[0]) for b in warmup_batches(x, y, 5)] == [5]
    assert [len(b[0]) for b in warmup_batches(x, y, 16)] == [10]  # one short batch per epoch
    assert [len(b[1]) for b in warmup_batches(x, y, 4, world_size=2, rank=1)] == [2, 1]  # this rank's blocks
    assert [len(b[0]) for b in warmup_batches(x, y, 3, world_size=2, rank=1)] == [1, 0]  # as RankBatches cuts them


def test_a_compiled_run_warms_up_outside_its_epochs_and_trains_the_same_weights(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: model)  # the compiler's cost is not the point
    store = ResultsStore(tmp_path / "results")
    plain = train_run(fast_config(epochs=1), store, progress=False)
    compiled = train_run(fast_config(epochs=1, compile=True), store, progress=False)
    runs = store.runs().set_index("run_id")
    assert runs.loc[compiled, "warmup_seconds"] > 0 and runs.loc[plain, "warmup_seconds"] == 0
    assert bool(runs.loc[compiled, "compile"])
    assert_same_weights(state_dict_of(store.run_dir(plain) / MODEL_FILE),
                        state_dict_of(store.run_dir(compiled) / MODEL_FILE))
