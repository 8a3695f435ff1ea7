"""The training engine (crt_bench.train.step) and --trace-steps (crt_bench.train.trace).

What must hold: the engine's settings change speed, not the network. A frozen teacher gives the
teacher's logits (exactly up to float rounding in fp32, to bf16 precision in bf16) as ordinary
tensors a loss can back-propagate through; channels-last training follows the NCHW trajectory; a
compiled student trains the same weights; a profiled run writes a readable trace and says so.
"""
from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import fast_config

from crt_bench.config.engine import EngineOptions
from crt_bench.core.errors import CrtBenchError
from crt_bench.methods.crt import transfer_distance
from crt_bench.methods.registry import StepContext, get_method
from crt_bench.models.build import build_model
from crt_bench.store.store import ResultsStore
from crt_bench.train.resolve import resolve_run_config
from crt_bench.train.step import TrainStep, resolve_teacher_precision
from crt_bench.train.teacher import FrozenTeacher
from crt_bench.train.trainer import train_run

CPU = torch.device("cpu")
SHAPE = (3, 16, 16)


def _net(arch: str = "resnet20", seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model(arch, num_classes=10, in_chans=3, mean=[0.5] * 3, std=[0.25] * 3)
    # a few training steps' worth of batch-norm statistics, so that folding has something to fold
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(32, *SHAPE))
    return model.eval()


def _images(n: int = 8, seed: int = 1) -> torch.Tensor:
    return torch.rand((n, *SHAPE), generator=torch.Generator().manual_seed(seed))


# -- the frozen teacher -----------------------------------------------------------------------------

def test_frozen_teacher_fp32_gives_the_teachers_logits_without_touching_the_teacher() -> None:
    model = _net()
    before = copy.deepcopy(model.state_dict())
    teacher = FrozenTeacher(model, SHAPE, CPU, precision="fp32")
    assert teacher.folded == 21  # resnet20: the stem and 2 x 9 block convolutions carry a batch norm
    assert teacher.channels_last and teacher.precision == "fp32"
    x = _images()
    with torch.no_grad():
        expected = model(x)
    got = teacher(x)
    assert got.dtype == torch.float32 and got.shape == (8, 10)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # the teacher itself keeps its BNs
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert not any(p.requires_grad for p in teacher.parameters())


def test_frozen_teacher_bf16_is_close_and_only_when_asked_or_native() -> None:
    model = _net()
    x = _images(16)
    with torch.no_grad():
        expected = model(x)
    got = FrozenTeacher(model, SHAPE, CPU, precision="bf16")(x)
    assert got.dtype == torch.float32
    # bf16 keeps 8 bits of mantissa: logits within a few percent of their scale, same ranking mostly
    scale = float(expected.abs().max())
    assert float((got - expected).abs().max()) < 0.05 * scale
    assert float((got - expected).abs().max()) > 0  # it really ran in reduced precision
    assert resolve_teacher_precision("fp32", CPU) == "fp32"
    assert resolve_teacher_precision("auto", torch.device("meta")) == "fp32"
    with pytest.raises(CrtBenchError, match="--teacher-precision"):
        resolve_teacher_precision("int8", CPU)


def test_auto_teacher_precision_is_fp32_on_a_gpu_that_only_emulates_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A T4 or V100: torch's is_bf16_supported() says True (emulation counts by default), bf16 is slow there."""
    def pre_ampere(including_emulation: bool = True) -> bool:
        return including_emulation

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", pre_ampere)
    assert resolve_teacher_precision("auto", torch.device("cuda")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)  # Ampere and newer
    assert resolve_teacher_precision("auto", torch.device("cuda")) == "bf16"


def test_frozen_teacher_output_can_be_used_in_a_loss_that_backpropagates_to_the_student() -> None:
    teacher = FrozenTeacher(_net(seed=0), SHAPE, CPU)
    student = _net("tiny_cnn", seed=3).train()
    x = _images()
    for distance in ("logit_l2", "softmax_l2"):
        with torch.no_grad():
            target = teacher(x)
        assert not target.is_inference()
        loss = transfer_distance(student(x), target, distance)
        student.zero_grad()
        loss.backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters()
                   if p.requires_grad)


def test_a_teacher_without_batch_norm_is_used_as_given() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                                torch.nn.Linear(4 * 14 * 14, 10))
    teacher = FrozenTeacher(model, SHAPE, CPU, precision="fp32", channels_last=False)
    assert teacher.folded == 0 and teacher.net is model
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(teacher(x), model(x))


# -- the step -----------------------------------------------------------------------------------------

def _trajectory(options: EngineOptions, method: str = "gaussian", steps: int = 4):
    """Losses and weights after ``steps`` steps, with noise off (sigma 0): ``randn_like`` fills an NHWC
    tensor in memory order, so the same seed gives the two layouts different noise per pixel."""
    torch.manual_seed(0)
    spec = get_method(method)
    model = build_model("resnet20", num_classes=10, in_chans=3, mean=[0.5] * 3, std=[0.25] * 3).train()
    initial = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ctx = StepContext(sigma=0.0, hparams=spec.make_hparams(sigma=0.25), epochs=1)
    step = TrainStep(spec, model, optimizer, ctx, CPU, options)
    x, y = _images(32, seed=5), torch.arange(32) % 10
    losses = [float(step(x, y)) for _ in range(steps)]
    final = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return losses, final, initial


def _assert_same_update(a: dict, b: dict, initial: dict, within: float) -> None:
    """The two runs' weights differ by less than ``within`` of how far training moved them."""
    for key, start in initial.items():
        if not start.is_floating_point():
            continue
        moved = float((a[key] - start).norm())
        assert float((a[key] - b[key]).norm()) <= within * moved + 1e-6, key


def test_channels_last_training_follows_the_nchw_trajectory() -> None:
    nchw, w_nchw, initial = _trajectory(EngineOptions(amp=False, channels_last=False))
    nhwc, w_nhwc, _ = _trajectory(EngineOptions(amp=False, channels_last=True))
    assert nhwc[0] == pytest.approx(nchw[0], rel=1e-5)  # the same network on the same batch
    assert nhwc == pytest.approx(nchw, rel=1e-3)
    assert nchw[-1] < nchw[0]  # it trains
    _assert_same_update(w_nhwc, w_nchw, initial, within=0.02)


def test_step_counts_optimizer_steps_and_keeps_the_loss_on_the_device() -> None:
    spec = get_method("macer")  # more than one optimizer step per loader batch? (steps_per_batch)
    model = build_model("tiny_cnn", num_classes=10, in_chans=3, mean=[0.5] * 3, std=[0.25] * 3).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    ctx = StepContext(sigma=0.25, hparams=spec.make_hparams(sigma=0.25), epochs=1)
    step = TrainStep(spec, model, optimizer, ctx, CPU, EngineOptions(channels_last=False))
    weights = [p.detach().clone() for p in model.parameters()]
    total = step(_images(16), torch.arange(16) % 10)
    assert isinstance(total, torch.Tensor) and total.dim() == 0 and torch.isfinite(total)
    assert ctx.step == step.chunks >= 1
    assert any(not torch.equal(a, b) for a, b in zip(weights, model.parameters()))


def test_compiled_student_trains_the_same_weights_as_eager() -> None:
    eager, w_eager, initial = _trajectory(EngineOptions(amp=False, channels_last=False), steps=2)
    compiled, w_compiled, _ = _trajectory(EngineOptions(amp=False, channels_last=False, compile=True), steps=2)
    assert compiled == pytest.approx(eager, rel=1e-3)
    assert set(w_compiled) == set(w_eager)  # no "_orig_mod." prefix: checkpoints stay loadable
    _assert_same_update(w_compiled, w_eager, initial, within=0.02)


def test_engine_settings_are_validated() -> None:
    with pytest.raises(CrtBenchError, match="--teacher-precision"):
        EngineOptions(teacher_precision="fp8").validate()
    with pytest.raises(CrtBenchError, match="--teacher-precision"):
        resolve_run_config("gaussian", "tiny_cnn", teacher_precision="half")
    with pytest.raises(CrtBenchError, match="--trace-steps"):
        resolve_run_config("gaussian", "tiny_cnn", trace_steps=-1)


# -- runs: the resolved engine is recorded, --trace-steps writes a trace ------------------------------

def test_profiled_run_writes_a_trace_and_flags_only_the_profiled_epoch(tmp_path) -> None:
    store = ResultsStore(tmp_path / "results")
    run_id = train_run(fast_config(trace_steps=2, channels_last=True), store, progress=False)
    folder = store.run_dir(run_id) / "trace"
    trace = json.loads((folder / "trace.json").read_text())
    names = {event.get("name") for event in trace["traceEvents"]}
    assert {"crt_bench.loss", "crt_bench.backward", "crt_bench.optimizer"} <= names
    ops = (folder / "ops.txt").read_text()
    assert "2 training step(s) after skipping 1" in ops and "crt_bench.backward" in ops
    epochs = store.read("epochs")
    epochs = epochs[epochs["run_id"] == run_id].sort_values("epoch")
    assert epochs["profiled"].tolist() == [True, False]
    row = store.get_run(run_id)
    assert bool(row["channels_last"]) is True and row["teacher_precision"] == ""
    assert row["precision"] == "fp32"  # CPUs train in float32 (crt_bench.train.step.CPU_TRAINING_AUTOCAST)


def test_crt_run_records_the_teachers_precision_and_folding(tmp_path) -> None:
    store = ResultsStore(tmp_path / "results")
    teacher_id = train_run(fast_config(arch="resnet20", epochs=1), store, progress=False)
    run_id = train_run(fast_config("crt", teacher=teacher_id, epochs=1, teacher_precision="fp32"), store,
                       progress=False)
    row = store.get_run(run_id)
    assert row["status"] == "finished"
    assert row["teacher_precision"] == "fp32" and row["teacher_folded_batchnorms"] == 21
    assert not (store.run_dir(run_id) / "trace").exists()  # nothing profiled unless asked


# -- CUDA (make test-gpu) -----------------------------------------------------------------------------

@pytest.mark.gpu
@pytest.mark.parametrize("method", ["gaussian", "crt", "smoothadv", "smoothmix", "macer", "consistency"])
def test_cuda_step_never_waits_for_the_host(method: str) -> None:
    """Every method's step, bf16 autocast and channels-last, with CUDA's sync debug mode set to error."""
    device = torch.device("cuda")
    spec = get_method(method)
    model = build_model("resnet20", num_classes=10, in_chans=3, mean=[0.5] * 3, std=[0.25] * 3).to(device).train()
    teacher = FrozenTeacher(_net("resnet20", seed=1), (3, 32, 32), device) if spec.needs_teacher else None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    ctx = StepContext(sigma=0.25, hparams=spec.make_hparams(sigma=0.25), epochs=1, teacher=teacher)
    step = TrainStep(spec, model, optimizer, ctx, device, EngineOptions())
    assert step.precision == "bf16" and step.channels_last
    x, y = torch.rand(32, 3, 32, 32, device=device), torch.arange(32, device=device) % 10
    step(x, y)  # warm-up: allocator, cuDNN autotuning
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        total = step(x, y)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(total).item()
    if teacher is not None:
        assert teacher.precision == "bf16" and teacher.folded == 21


# -- the epoch loop and the step agree ---------------------------------------------------------------

@pytest.mark.parametrize("method", ["gaussian", "smoothmix"])
def test_the_epoch_loop_trains_what_the_timed_step_trains(method: str) -> None:
    """crt_bench.train.epoch.train_epoch spells out TrainStep.__call__'s minibatch loop (which the timing
    probes and the warm-up call): over the same batches they give the same losses, steps and weights."""
    from crt_bench.train.epoch import train_epoch

    spec = get_method(method)
    x, y = _images(16), torch.arange(16) % 10

    def fresh() -> TrainStep:
        model = _net("tiny_cnn").train()
        ctx = StepContext(sigma=0.25, hparams=spec.make_hparams(sigma=0.25), epochs=1)
        return TrainStep(spec, model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), ctx, CPU)

    looped, stepped = fresh(), fresh()
    torch.manual_seed(5)
    stats = train_epoch(looped, [(x, y), (x, y)], epoch=0, lr=0.1)
    torch.manual_seed(5)
    stepped.ctx.epoch = 0
    total = stepped(x, y) + stepped(x, y)
    assert stats.steps == stepped.ctx.step == 2 * stepped.chunks
    assert torch.equal(stats.loss_sum, total)
    for key, value in looped.model.state_dict().items():
        assert torch.equal(value, stepped.model.state_dict()[key]), key
