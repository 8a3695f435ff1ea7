"""One training step, and the engine settings that make it cheap.

    step = TrainStep(spec, model, optimizer, ctx, device, EngineOptions())
    loss_sum = step(x, y)   # one loader batch: per method minibatch, loss -> backward -> SGD step
    for xb, yb in step.minibatches(x, y): step.update(step.loss(xb, yb))   # the same, in its parts

The epoch loop (:mod:`crt_bench.train.epoch`, in the parts), the timing probes (:mod:`crt_bench.timing.probe`) and
``benchmarks/bench_train.py`` all call this, so what is timed is what trains.

Engine settings (every one is recorded with the run):

* ``amp``: the step runs under bf16 autocast on CUDA; on CPUs only where :data:`CPU_TRAINING_AUTOCAST` allows
  it and the CPU computes bf16 natively (AVX512-BF16, AMX: :mod:`crt_bench.core.bf16`): off, see there.
  The weights, the optimizer and the noise stay float32 either way.
* ``channels_last``: the student's weights and batches in NHWC. ``None`` = for convolutional
  students (faster with cuDNN tensor cores and with oneDNN on CPUs). Numerically the same network.
* ``compile``: ``torch.compile`` the student's forward (the weights stay in the uncompiled module).
* the teacher (CRT): :class:`FrozenTeacher`, a copy with batch norm folded into the convolutions,
  NHWC, run under ``torch.inference_mode`` and, by default, in bf16 where the hardware computes it
  natively (``teacher_precision="auto"``). The noisy input it sees is float32 either way.
* ``tf32``: the step runs with TF32 float32 matmuls and convolutions (Ampere+ GPUs only; refused
  elsewhere); off by default, so that float32 work is IEEE float32 (:mod:`crt_bench.core.tf32`).

The loss sum stays on the device: the step never waits for the host. :meth:`TrainStep.warm_up` runs
steps whose effects are undone, so that compilation happens before any timed epoch.
"""
from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext

import torch
from torch import Tensor, nn
from torch.profiler import record_function

from crt_bench.config.choices import check_teacher_precision
from crt_bench.config.engine import EngineOptions
from crt_bench.config.run import RunConfig
from crt_bench.core.bf16 import native_bf16
from crt_bench.core.provenance import synchronize
from crt_bench.core.tf32 import check_tf32, in_force_under, tf32_mode
from crt_bench.data.catalog import DatasetInfo
from crt_bench.methods.registry import MethodSpec, StepContext
from crt_bench.models.build import build_model


def trained_model(spec: MethodSpec, cfg: RunConfig, info: DatasetInfo, hparams: object, teacher: nn.Module | None,
                  results_root: str) -> tuple[nn.Module, str]:
    """The module a run trains and saves, and the run its weights partly start from ("" if none).

    A fresh classifier of the run's arch, or what the method's ``compose`` builds around the teacher.
    """
    compose = spec.compose
    if compose is None:
        return build_model(cfg.arch, num_classes=info.num_classes, in_chans=info.in_chans, mean=info.mean,
                           std=info.std), ""
    return compose(teacher, hparams, sigma=cfg.sigma, profile=cfg.profile, dataset=cfg.dataset,
                   results_root=results_root)


def make_optimizer(cfg: RunConfig, model: nn.Module) -> torch.optim.Optimizer:
    """The run's optimizer over ``model``'s parameters that require gradients (a composed model's frozen part does not)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


CPU_TRAINING_AUTOCAST = False
"""bf16 autocast of training on CPUs that compute bf16 natively: off. Measured on the project's AVX512-BF16
CPU (no AMX) in the default profile's run: SmoothMix on MobileNetV4-Conv-Small took 18 ms per image-step in
bf16 against 10 ms in float32, and its noisy test accuracy after 5 of 8 epochs was 0.49 against 0.74 in
float32; ResNet-20's steps were 2x faster in bf16 (benchmarks/bench_train.py). Without a parity check per
method and architecture, CPUs train in float32; ``amp`` keeps its meaning on CUDA."""


def has_conv(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def resolve_teacher_precision(precision: str, device: torch.device) -> str:
    if check_teacher_precision(precision) == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def resolve_channels_last(setting: bool | None, model: nn.Module) -> bool:
    return has_conv(model) if setting is None else bool(setting)


class TrainStep:
    """One loader batch of ``spec``'s training: ``chunks`` optimizer steps, loss summed on the device."""

    def __init__(self, spec: MethodSpec, model: nn.Module, optimizer: torch.optim.Optimizer, ctx: StepContext,
                 device: torch.device, options: EngineOptions | None = None,
                 wrap: Callable[[nn.Module], nn.Module] | None = None) -> None:
        """``wrap`` (e.g. DistributedDataParallel, crt_bench.parallel.env) goes around the student before compiling."""
        self.options = options or EngineOptions()
        self.options.validate()
        check_tf32(self.options.tf32, device, "--tf32")
        self.tf32 = in_force_under(self.options.tf32, device)  # what the step's float32 work runs in
        self.spec, self.model, self.optimizer, self.ctx, self.device = spec, model, optimizer, ctx, device
        self.chunks = max(1, int(spec.steps_per_batch(ctx.hparams)))
        self.channels_last = resolve_channels_last(self.options.channels_last, model)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # in place: the optimizer keeps the same parameters
        net = wrap(model) if wrap is not None else model
        self.forward = torch.compile(net) if self.options.compile else net
        self.amp = self.options.amp and (device.type == "cuda" or (CPU_TRAINING_AUTOCAST and native_bf16(device)))

    @property
    def precision(self) -> str:
        return "bf16" if self.amp else "fp32"

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """One loader batch; returns its loss sum (on the device). The inner loop of crt_bench.train.epoch."""
        with tf32_mode(self.options.tf32):
            total = torch.zeros((), device=x.device)
            for xb, yb in self.minibatches(x, y):
                loss = self.loss(xb, yb)
                self.update(loss)
                total += loss.detach().float()
                self.ctx.step += 1
            return total

    def minibatches(self, x: Tensor, y: Tensor) -> Iterator[tuple[Tensor, Tensor]]:
        """The method's minibatches of a loader batch (``spec.steps_per_batch``), in the student's memory format."""
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return zip(x.chunk(self.chunks), y.chunk(self.chunks))

    def loss(self, x: Tensor, y: Tensor) -> Tensor:
        """The method's registered loss on one minibatch, under bf16 autocast where the run uses it."""
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.amp else nullcontext()
        with record_function("crt_bench.loss"), autocast:
            return self.spec.loss(self.forward, x, y, self.ctx)

    def update(self, loss: Tensor) -> None:
        """Backward and one optimizer step."""
        with record_function("crt_bench.backward"):
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
        with record_function("crt_bench.optimizer"):
            self.optimizer.step()

    def warm_up(self, batches: Sequence[tuple[Tensor, Tensor]]) -> float:
        """Steps on ``batches`` whose every effect is undone; returns their seconds (compilation, mostly).

        ``torch.compile`` compiles a graph (train-mode forward, the attacks' eval-mode forward, the
        backward) at the first step of each batch shape, so a compiled run's first epoch would time the
        compiler. These are real steps (the method's loss, backward, optimizer); afterwards the weights,
        batch-norm statistics, optimizer state, the CPU and CUDA random states and the step counter are
        put back: training continues exactly as it would without them.
        """
        model, optimizer, device = self.model, self.optimizer, self.device
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        optimizer_state = copy.deepcopy(optimizer.state_dict())
        cpu_rng = torch.get_rng_state()
        cuda_rng = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        step, training = self.ctx.step, model.training
        start = time.perf_counter()
        try:
            model.train()
            for x, y in batches:
                self(x, y)
            synchronize(device)
        finally:
            model.load_state_dict(weights)
            optimizer.load_state_dict(optimizer_state)
            optimizer.zero_grad(set_to_none=True)
            torch.set_rng_state(cpu_rng)
            if cuda_rng is not None:
                torch.cuda.set_rng_state(cuda_rng, device)
            self.ctx.step = step
            model.train(training)
        return time.perf_counter() - start


def warmup_batches(x: Tensor, y: Tensor, batch_size: int, world_size: int = 1,
                   rank: int = 0) -> list[tuple[Tensor, Tensor]]:
    """One loader batch of each shape an epoch over ``len(x)`` images feeds this rank (full, then the tail).

    A data-parallel rank gets its block of every global batch (``crt_bench.data.batches.RankBatches``).
    """
    sizes = [min(batch_size, len(x))] + ([len(x) % batch_size] if len(x) > batch_size and len(x) % batch_size else [])
    local = [len(torch.arange(size).tensor_split(world_size)[rank]) for size in sizes]
    return [(x[:n], y[:n]) for n in local]
