"""Where the training step runs in bf16 (crt_bench.core.bf16): only where the hardware computes it natively.

What must hold: the CPU decision reads the bf16 instruction flags (avx512_bf16, amx_bf16), never mere
AVX512 (where oneDNN emulates bf16, slower than float32); on such a CPU the step autocasts to bf16 by
default and records it, ``amp=False`` keeps float32, and an emulating CPU stays float32.
"""
from __future__ import annotations

import pytest
import torch

from crt_bench.config.engine import EngineOptions
from crt_bench.core import bf16
from crt_bench.methods.registry import StepContext, get_method
from crt_bench.models.build import build_model
from crt_bench.train import step as step_module
from crt_bench.train.step import TrainStep

CPU = torch.device("cpu")
ZEN4 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512_bf16 avx512vl\n"
SKYLAKE = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw avx512dq avx512vl\n"
SAPPHIRE = "flags\t\t: avx512f amx_bf16 amx_tile amx_int8\n"


def test_cpu_flags_are_read_from_the_first_flags_line() -> None:
    assert bf16.cpu_flags(ZEN4) >= {"avx512f", "avx512_bf16"}
    assert bf16.cpu_flags("model name\t: ARM\n") == frozenset()


@pytest.mark.parametrize("text, native", [(ZEN4, True), (SAPPHIRE, True), (SKYLAKE, False), ("", False)])
def test_only_bf16_instructions_count_as_native(text: str, native: bool) -> None:
    assert bf16.flags_compute_bf16(bf16.cpu_flags(text)) is native


def test_a_missing_cpuinfo_means_no_native_bf16(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    bf16.cpu_native_bf16.cache_clear()
    monkeypatch.setattr(bf16, "CPUINFO", tmp_path / "absent")
    try:
        assert bf16.cpu_native_bf16() is False
        assert bf16.native_bf16("cpu") is False and bf16.native_bf16("meta") is False
    finally:
        bf16.cpu_native_bf16.cache_clear()


def _step(options: EngineOptions) -> tuple[TrainStep, list[torch.dtype]]:
    """A Gaussian step on a tiny CNN; the dtypes its convolutions computed in, one per forward."""
    torch.manual_seed(0)
    spec = get_method("gaussian")
    model = build_model("tiny_cnn", num_classes=10, in_chans=1, mean=[0.5], std=[0.25]).train()
    seen: list[torch.dtype] = []
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    conv.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    ctx = StepContext(sigma=0.25, hparams=spec.make_hparams(sigma=0.25), epochs=1)
    step = TrainStep(spec, model, torch.optim.SGD(model.parameters(), lr=0.01), ctx, CPU, options)
    step(torch.rand(8, 1, 12, 12), torch.arange(8) % 10)
    return step, seen


def test_cpu_training_stays_float32_by_default_even_where_bf16_is_native(monkeypatch: pytest.MonkeyPatch) -> None:
    """The policy (step.CPU_TRAINING_AUTOCAST): bf16 training on CPUs failed its parity check (SmoothMix)."""
    monkeypatch.setattr(step_module, "native_bf16", lambda device: True)
    step, seen = _step(EngineOptions())
    assert step.amp is False and step.precision == "fp32" and seen == [torch.float32]


@pytest.mark.parametrize("native", [True, False])
def test_the_cpu_step_autocasts_to_bf16_only_where_native_when_allowed(monkeypatch: pytest.MonkeyPatch,
                                                                        native: bool) -> None:
    monkeypatch.setattr(step_module, "CPU_TRAINING_AUTOCAST", True)
    monkeypatch.setattr(step_module, "native_bf16", lambda device: native)
    step, seen = _step(EngineOptions())
    assert step.amp is native and step.precision == ("bf16" if native else "fp32")
    assert seen == [torch.bfloat16 if native else torch.float32]
    assert all(p.dtype == torch.float32 for p in step.model.parameters())  # the weights stay float32


def test_no_amp_keeps_float32_on_a_native_bf16_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(step_module, "native_bf16", lambda device: True)
    step, seen = _step(EngineOptions(amp=False))
    assert step.precision == "fp32" and seen == [torch.float32]
