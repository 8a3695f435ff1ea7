"""TF32 (crt_bench.core.tf32): one owner of the setting, IEEE fp32 by default, the fold check always in IEEE.

What must hold: the context manager sets both CUDA settings and puts back exactly what was there,
through the one API the installed torch has (never both); TF32 asked for on a CPU or a pre-Ampere
GPU is a clear error; the batch-norm folding check compares in IEEE float32 whatever the caller set
(with TF32 rounding emulated, the same check fails for ResNet-20/110); the certification engine and
the training step run fp32 with TF32 off and ``tf32`` with it on, only while they work; every row
records the state; the report shows it beside a GPU's name.
"""
from __future__ import annotations

from contextlib import nullcontext
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import fast_config

from crt_bench.certify import engine as engine_module
from crt_bench.certify.resumable import certify_run
from crt_bench.certify.smooth import Smooth
from crt_bench.config.certify import CertifyConfig
from crt_bench.config.engine import EngineOptions
from crt_bench.core import tf32
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.tf32 import TF32State, check_tf32, device_label, in_force_under, tf32_mode
from crt_bench.methods.registry import StepContext, get_method
from crt_bench.models import bn_fold as batchnorm_fold
from crt_bench.models.bn_fold import fold_batchnorm
from crt_bench.models.build import build_model
from crt_bench.store.store import ResultsStore
from crt_bench.timing.probe import ProbeConfig, probe
from crt_bench.train import step as train_step_module
from crt_bench.train.step import TrainStep
from crt_bench.train.trainer import train_run

CPU = torch.device("cpu")
SHAPE = (3, 32, 32)


class StateSpy(torch.nn.Module):
    """A linear classifier that records the TF32 setting in force at each forward."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(3 * 4 * 4, classes)
        self.seen: list[TF32State] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(tf32.read())
        return self.fc(x.flatten(1))


# -- the settings ---------------------------------------------------------------------------------------

def test_tf32_mode_sets_both_and_puts_back_exactly_what_was_there() -> None:
    backends = torch.backends
    assert tf32.uses_precision_api()  # the pinned torch has the fp32_precision settings
    before = (backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision)
    with tf32_mode(True):
        assert tf32.read() == TF32State(matmul=True, conv=True)
        with tf32_mode(False):
            assert tf32.read() == TF32State(matmul=False, conv=False)
            assert (backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision) == ("ieee", "ieee")
        assert tf32.read() == TF32State(matmul=True, conv=True)
    assert (backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision) == before  # "none" stays "none"
    with pytest.raises(RuntimeError, match="boom"), tf32_mode(not tf32.read().conv):
        raise RuntimeError("boom")
    assert (backends.cuda.matmul.fp32_precision, backends.cudnn.conv.fp32_precision) == before


def test_read_resolves_none_through_backend_and_generic_settings() -> None:
    assert tf32._resolved("none", "none", "none") is False
    assert tf32._resolved("none", "tf32", "ieee") is True
    assert tf32._resolved("ieee", "tf32", "tf32") is False
    assert tf32._resolved("none", "none", "tf32") is True


class _Refuses:
    """A settings object whose legacy flag must never be touched (torch raises on mixed APIs)."""

    def __init__(self, precision: str) -> None:
        object.__setattr__(self, "fp32_precision", precision)

    def __getattr__(self, name: str):
        raise AssertionError(f"the legacy {name} was read although fp32_precision exists")

    def __setattr__(self, name: str, value) -> None:
        if name != "fp32_precision":
            raise AssertionError(f"the legacy {name} was set although fp32_precision exists")
        object.__setattr__(self, name, value)


def test_each_torch_gets_its_own_api_and_never_the_other(monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = SimpleNamespace(backends=SimpleNamespace(cuda=SimpleNamespace(matmul=SimpleNamespace(allow_tf32=False)),
                                                      cudnn=SimpleNamespace(allow_tf32=True)))
    monkeypatch.setattr(tf32, "torch", legacy)  # torch 2.6 .. 2.8: only allow_tf32
    assert not tf32.uses_precision_api()
    assert tf32.read() == TF32State(matmul=False, conv=True)
    with tf32_mode(False):
        assert (legacy.backends.cuda.matmul.allow_tf32, legacy.backends.cudnn.allow_tf32) == (False, False)
    with tf32_mode(True):
        assert tf32.read() == TF32State(matmul=True, conv=True)
    assert (legacy.backends.cuda.matmul.allow_tf32, legacy.backends.cudnn.allow_tf32) == (False, True)

    conv, matmul = _Refuses("tf32"), _Refuses("none")
    new = SimpleNamespace(backends=SimpleNamespace(cuda=SimpleNamespace(matmul=matmul),
                                                   cudnn=SimpleNamespace(conv=conv, fp32_precision="none"),
                                                   fp32_precision="none"))
    monkeypatch.setattr(tf32, "torch", new)  # torch >= 2.9: fp32_precision only, whatever else exists
    assert tf32.uses_precision_api()
    assert tf32.read() == TF32State(matmul=False, conv=True)
    with tf32_mode(True):
        assert (matmul.fp32_precision, conv.fp32_precision) == ("tf32", "tf32")
    assert (matmul.fp32_precision, conv.fp32_precision) == ("none", "tf32")


def test_tf32_is_refused_where_the_device_cannot_honour_it(monkeypatch: pytest.MonkeyPatch) -> None:
    check_tf32(False, "cpu")  # not asked for: nothing to check
    with pytest.raises(CrtBenchError, match="--tf32 needs an NVIDIA GPU of compute capability 8.0 .* device is cpu"):
        check_tf32(True, "cpu", "--tf32")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Tesla V100-SXM2-16GB")
    with pytest.raises(CrtBenchError, match="Tesla V100-SXM2-16GB has compute capability 7.0"):
        check_tf32(True, "cuda")
    assert not in_force_under(True, "cuda")  # a V100 computes IEEE float32 whatever the setting
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    check_tf32(True, "cuda")
    assert in_force_under(True, "cuda") and not in_force_under(False, "cuda")
    assert not in_force_under(True, "cpu")


def test_device_label_shows_the_state_of_gpu_rows_only() -> None:
    assert device_label("NVIDIA H200", False) == "NVIDIA H200 (tf32 off)"
    assert device_label("NVIDIA H200", True) == "NVIDIA H200 (tf32 on)"
    assert device_label("NVIDIA H200", float("nan")) == "NVIDIA H200"  # a row from before the column
    assert device_label("NVIDIA H200", None) == "NVIDIA H200"
    assert device_label("NVIDIA H200", pd.NA) == "NVIDIA H200"
    assert device_label("cpu (x86_64, 2 threads)", False) == "cpu (x86_64, 2 threads)"
    frame = pd.DataFrame({"device": ["NVIDIA H200", "NVIDIA H200"], "tf32": [True, None]})
    assert tf32.device_labels(frame) == ["NVIDIA H200 (tf32 on)", "NVIDIA H200"]
    assert tf32.device_labels(frame[["device"]]) == ["NVIDIA H200", "NVIDIA H200"]


# -- the batch-norm folding check -------------------------------------------------------------------------

def _round_to_tf32(t: torch.Tensor) -> torch.Tensor:
    """float32 -> its nearest TF32 value (10-bit mantissa), as Ampere's tensor cores read conv inputs."""
    bits = t.float().contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


@pytest.fixture
def emulated_tf32(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Every Conv2d rounds its input and weights to TF32 while the TF32 setting is on; returns the
    setting each convolution ran under."""
    real = F.conv2d
    seen: list[bool] = []

    def conv2d(x, weight, *args, **kwargs):
        on = tf32.read().conv
        seen.append(on)
        return real(_round_to_tf32(x), _round_to_tf32(weight), *args, **kwargs) if on else real(x, weight, *args, **kwargs)

    monkeypatch.setattr(torch.nn.modules.conv.F, "conv2d", conv2d)
    return seen


def _trained_like(arch: str) -> torch.nn.Module:
    """``arch`` with batch-norm statistics and affine weights away from their initial 0/1, as a trained net's."""
    torch.manual_seed(0)
    model = build_model(arch, num_classes=10, in_chans=3, mean=[0.5] * 3, std=[0.25] * 3).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
            c = bn.num_features
            bn.running_mean.copy_(torch.randn(c, generator=generator) * 0.2)
            bn.running_var.copy_(torch.rand(c, generator=generator) * 1.5 + 0.25)
            bn.weight.copy_(torch.rand(c, generator=generator) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=generator) * 0.1)
    return model


@pytest.mark.parametrize(("arch", "batchnorms"), [("resnet20", 21), ("resnet110", 111)])
def test_fold_check_runs_in_ieee_fp32_where_tf32_rounding_would_fail_it(
        arch: str, batchnorms: int, emulated_tf32: list[bool], monkeypatch: pytest.MonkeyPatch) -> None:
    model = _trained_like(arch)
    with tf32_mode(True):  # the caller's setting (PyTorch's own default for cuDNN convolutions)
        emulated_tf32.clear()
        folded, count = fold_batchnorm(model, SHAPE)
        assert emulated_tf32 and not any(emulated_tf32), "every convolution of the check ran with TF32 off"
        assert folded is not None and count == batchnorms
        assert tf32.read() == TF32State(matmul=True, conv=True), "the caller's setting is back"
        # the same check with the caller's TF32 left on (what happened before): the folded copy is refused
        monkeypatch.setattr(batchnorm_fold, "tf32_mode", lambda enabled: nullcontext())
        assert not batchnorm_fold._same_logits(model, folded, SHAPE)


# -- where TF32 is set: certification and training --------------------------------------------------------

def test_certification_runs_fp32_in_ieee_and_tf32_with_it_on_only_while_sampling(
        monkeypatch: pytest.MonkeyPatch) -> None:
    spy, x = StateSpy(), torch.rand(3, 4, 4)
    with tf32_mode(True):  # the caller has TF32 on: an fp32 certification still runs in IEEE
        Smooth(spy, 3, 0.25, precision="fp32", noise_seed=0).certify(x, 10, 20, 0.01, batch_size=8)
        assert spy.seen and not any(state.any for state in spy.seen)
        assert tf32.read().conv
    with pytest.raises(CrtBenchError, match="tf32 needs an NVIDIA GPU .* device is cpu"):
        Smooth(spy, 3, 0.25, precision="tf32").certify(x, 10, 20, 0.01, batch_size=8)
    monkeypatch.setattr(engine_module, "check_tf32", lambda *args: None)  # as on an Ampere GPU
    spy.seen.clear()
    with tf32_mode(False):
        Smooth(spy, 3, 0.25, precision="tf32", noise_seed=0).certify(x, 10, 20, 0.01, batch_size=8)
        assert spy.seen and all(state == TF32State(True, True) for state in spy.seen)
        assert not tf32.read().any, "set only while the engine samples"


def test_the_training_step_runs_with_its_own_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = get_method("gaussian")
    spy = StateSpy()
    ctx = StepContext(sigma=0.25, hparams=spec.make_hparams(sigma=0.25), epochs=1)
    optimizer = torch.optim.SGD(spy.parameters(), lr=0.1)
    x, y = torch.rand(4, 3, 4, 4), torch.tensor([0, 1, 2, 0])
    with tf32_mode(True):
        step = TrainStep(spec, spy, optimizer, ctx, CPU, EngineOptions())
        step(x, y)
        assert spy.seen and not any(state.any for state in spy.seen) and not step.tf32
        assert tf32.read().conv
    with pytest.raises(CrtBenchError, match="--tf32 needs an NVIDIA GPU"):
        TrainStep(spec, spy, optimizer, ctx, CPU, EngineOptions(tf32=True))
    monkeypatch.setattr(train_step_module, "check_tf32", lambda *args: None)  # as on an Ampere GPU
    spy.seen.clear()
    with tf32_mode(False):
        TrainStep(spec, spy, optimizer, ctx, CPU, EngineOptions(tf32=True))(x, y)
        assert spy.seen and all(state == TF32State(True, True) for state in spy.seen)
        assert not tf32.read().any


# -- recorded with every row -------------------------------------------------------------------------------

def test_runs_certifications_and_probes_record_the_state(tmp_path) -> None:
    store = ResultsStore(tmp_path / "results")
    run_id = train_run(fast_config(epochs=1), store, progress=False)
    runs = store.read("runs")
    assert "tf32" in runs and not runs["tf32"].astype(bool).any()
    certify_run(run_id, store, CertifyConfig(n0=10, n=20, alpha=0.01, batch=16, subset="range:0:2"), device="cpu",
                progress=False)
    rows, states = store.read("certify"), store.read("certifications")
    assert rows["tf32"].tolist() == [False, False]
    assert "tf32" in states and not states["tf32"].astype(bool).any()
    row = probe("gaussian", "tiny_cnn", cfg=ProbeConfig(batches=1, warmup=1, repeats=1, batch_size=4, image_size=8))
    assert row["tf32"] is False


def test_run_refuses_tf32_on_a_cpu_before_writing_anything(tmp_path) -> None:
    store = ResultsStore(tmp_path / "results")
    with pytest.raises(CrtBenchError, match="--tf32 needs an NVIDIA GPU"):
        train_run(fast_config(tf32=True), store, progress=False)
    assert not (tmp_path / "results" / "runs").exists() or not any((tmp_path / "results" / "runs").iterdir())
    assert store.read("runs").empty


def test_the_report_shows_the_state_beside_a_gpu_and_still_reads_stores_without_it(tmp_path) -> None:
    from crt_bench.report.document import write_report
    from crt_bench.report.paper_tables import acr_table
    from crt_bench.report.slowdown import latest_timings

    source = ResultsStore(tmp_path / "source")
    run_id = train_run(fast_config(epochs=1), source, progress=False)
    certify_run(run_id, source, CertifyConfig(n0=10, n=20, alpha=0.01, batch=16, subset="range:0:2"), device="cpu",
                progress=False)
    probe_row = probe("gaussian", "tiny_cnn", cfg=ProbeConfig(batches=1, warmup=1, repeats=1, batch_size=4,
                                                                 image_size=8))
    gpu = "NVIDIA H200"
    tables = {"runs": source.runs(), "certify": source.read("certify"), "timing": pd.DataFrame([probe_row])}
    for name, label, keep in (("new", f"{gpu} (tf32 off)", True), ("old", gpu, False)):
        store = ResultsStore(tmp_path / name)
        for table, frame in tables.items():  # the same rows as a GPU would write them, or before the column
            frame = frame.assign(device=gpu)
            store.append(table, frame if keep else frame.drop(columns="tf32"))
        assert acr_table(store)["device"].tolist() == [label]
        assert latest_timings(store)["device"].tolist() == [label]
        text = write_report(store, tmp_path / f"plots-{name}", figures={}, profile_note="").read_text()
        assert f"- Devices: {label}\n" in text and f"| {label} |" in text
        assert ("(tf32 off)" in text) == keep
