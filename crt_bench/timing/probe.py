"""Timing probes: what one epoch, and one whole recipe, of a method costs on an architecture.

A probe trains a freshly initialised model for a few loader batches of random CIFAR-shaped data at
the method's paper hyper-parameters and batch size (after warm-up; CUDA synchronised around every
timed block), repeats that, and projects

    epoch seconds  = median seconds per loader batch x ceil(train images / batch size)
    recipe hours   = epoch seconds x recipe epochs / 3600

Random data costs the same as real data here: the step's arithmetic does not depend on pixel values.
Rows carry ``hours_basis = "projected"``; full training runs (the ``runs`` table) are the measured hours.
The arithmetic lives in :func:`summarize` so that it can be checked with a fake clock.

``peak_memory_bytes`` is each probe's own: on CUDA, the peak allocated while that probe was built,
warmed up and stepped, minus what was allocated before it (other probes kept alive in an interleaved
round are not counted); -1 on a CPU. ``tf32`` is the TF32 state its step ran in (:mod:`crt_bench.core.tf32`).
"""
from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Callable

import torch

from crt_bench.config.engine import EngineOptions
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.bf16 import native_bf16
from crt_bench.core.provenance import environment, synchronize
from crt_bench.core.tf32 import check_tf32
from crt_bench.methods.registry import StepContext, config_label, get_method
from crt_bench.models.build import build_model
from crt_bench.train.step import TrainStep
from crt_bench.train.teacher import FrozenTeacher

CIFAR10_TRAIN_IMAGES = 50_000


@dataclass
class ProbeConfig:
    batches: int = 20  # timed loader batches per repeat
    warmup: int = 2  # untimed loader batches first (allocator, cuDNN autotuning); at least 1
    repeats: int = 3  # timed repeats; the interleaved grid's rounds (crt_bench.timing.rounds): at least these
    # Adaptive rounds (crt_bench.timing.rounds.settled): with a target, the interleaved grid keeps timing rounds
    # after ``repeats`` until every ratio's interval reaches INTERVAL_LEVEL and its half-width is at most
    # ``target_half_width`` of the ratio, or ``max_repeats`` rounds ran. None: exactly ``repeats`` rounds.
    target_half_width: float | None = None
    max_repeats: int | None = None  # None: ``repeats`` (no extra rounds)
    batch_size: int | None = None  # None: the method's recipe batch size
    image_size: int = 32
    in_chans: int = 3
    num_classes: int = 10
    train_images: int = CIFAR10_TRAIN_IMAGES
    amp: bool = True  # bf16 autocast where native (CUDA, AVX512-BF16/AMX CPUs), as the training loop
    channels_last: bool | None = None  # the training engine's settings (crt_bench.config.engine.EngineOptions)
    compile: bool = False
    teacher_precision: str = "auto"
    fold_teacher: bool = True
    tf32: bool = False  # TF32 in the step (Ampere+ GPUs); off: IEEE float32, as training by default
    profile: str = "paper"  # whose sizes a composed module takes (denoised smoothing's denoiser)
    # "engine": the step alone on one batch already on the device; "paper": the official scripts' loop
    # (crt_bench.timing.paper: a DataLoader with augmentation, .item() per step, the per-epoch test pass)
    protocol: str = "engine"
    hparams: dict[str, dict[str, str]] = field(default_factory=dict)  # per method: --set overrides
    test_images: int = 10_000  # the paper protocol's per-epoch test pass (CIFAR-10's test set)
    loader_workers: int | None = None  # the paper protocol's DataLoader workers; None: each official script's

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise CrtBenchError(f"unknown timing protocol {self.protocol!r}; valid: {', '.join(PROTOCOLS)}")
        if self.target_half_width is not None and not self.target_half_width > 0:
            raise CrtBenchError(f"target half-width must be > 0 (a fraction of the ratio), "
                                f"got {self.target_half_width}")
        if self.max_repeats is not None and self.max_repeats < self.repeats:
            raise CrtBenchError(f"max repeats ({self.max_repeats}) is below repeats ({self.repeats})")

    @property
    def round_cap(self) -> int:
        """The most interleaved rounds an architecture gets."""
        return self.repeats if self.target_half_width is None else max(self.max_repeats or 0, self.repeats)

    def rounds_text(self) -> str:
        """``"6"`` (fixed) or ``"6-12"`` (adaptive), for progress lines."""
        return str(self.repeats) if self.round_cap == self.repeats else f"{self.repeats}-{self.round_cap}"

    def with_precision(self, precision: str | None, device: torch.device | str) -> ProbeConfig:
        """This configuration in ``precision`` (fp32, tf32, bf16; None: the protocol's own, the engine's
        bf16-where-native or the paper's fp32); one clear error where ``device`` cannot honour it."""
        if precision is None:
            return self if self.protocol == "engine" else replace(self, amp=False, tf32=False)
        if precision not in PRECISIONS:
            raise CrtBenchError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
        device = torch.device(device)
        if precision == "tf32":
            check_tf32(True, device, "--precision tf32")
        if precision == "bf16" and not (device.type == "cuda" and native_bf16(device)):
            raise CrtBenchError(f"--precision bf16 needs a GPU with native bf16 (the training step autocasts "
                                f"only there); the device is {device.type}")
        return replace(self, amp=precision == "bf16", tf32=precision == "tf32")

    def engine_options(self) -> EngineOptions:
        return EngineOptions(amp=self.amp, channels_last=self.channels_last, compile=self.compile,
                             teacher_precision=self.teacher_precision, fold_teacher=self.fold_teacher, tf32=self.tf32)


PROTOCOLS = ("engine", "paper")
PRECISIONS = ("fp32", "tf32", "bf16")


def parse_recipe(recipe: str) -> tuple[int, int] | None:
    """``"200x128"`` -> (200 epochs, batch 128); ``""``: the method's own recipe (None)."""
    if not recipe:
        return None
    epochs, _, batch = recipe.partition("x")
    try:
        return int(epochs), int(batch)
    except ValueError:
        raise CrtBenchError(f"a timing recipe is EPOCHSxBATCH (e.g. 200x128), got {recipe!r}") from None


# Probe sizes per profile: the paper profile times a few hundred optimizer steps at the recipe's
# batch size; the CPU profiles time small batches so that the whole methods x architectures grid fits
# in minutes (per-image costs, hence ratios, carry over; absolute hours are this CPU's). The CPU profiles'
# rounds are adaptive: 6 (the fewest whose interval reaches the 95% level) while every ratio is within +-5%,
# up to 12 where a shared machine's load makes them noisy (a round costs 2-10 s per architecture there).
PROBES: dict[str, ProbeConfig] = {
    # smoke: the test suite's path; its paper-protocol loaders load in the main process (rows say "0 loader workers")
    "smoke": ProbeConfig(batches=1, warmup=1, repeats=2, batch_size=8, profile="smoke", loader_workers=0),
    "gpu-smoke": ProbeConfig(batches=2, warmup=1, repeats=2, batch_size=None, profile="gpu-smoke"),  # the paper's probe
    "cpu": ProbeConfig(batches=1, warmup=1, repeats=6, batch_size=16, target_half_width=0.05, max_repeats=12,
                       profile="cpu"),
    "cpu-full": ProbeConfig(batches=1, warmup=1, repeats=6, batch_size=16, target_half_width=0.05,
                            max_repeats=12, profile="cpu-full"),  # the whole registry: ~25 min
    "paper": ProbeConfig(batches=50, warmup=5, repeats=3, batch_size=None),
}

# The paper protocol's probe sizes, where they differ from the engine's: on a CPU one loader batch of 8 per
# probe and round, 6 fixed rounds (the fewest whose median interval reaches 95%), loading in the main process
# (seven probes' loader workers would outnumber 2 cores); ResNet-110's seven probes then take about 4 minutes.
# On a GPU each recipe's batch, 20 loader batches per round (the GPU check's paper step).
PAPER_PROBES: dict[str, ProbeConfig] = {
    "cpu": ProbeConfig(batches=1, warmup=1, repeats=6, batch_size=8, profile="cpu", protocol="paper",
                       loader_workers=0),
    "cpu-full": ProbeConfig(batches=1, warmup=1, repeats=6, batch_size=8, profile="cpu-full", protocol="paper",
                            loader_workers=0),
    "paper": ProbeConfig(batches=20, warmup=2, repeats=3, batch_size=None, protocol="paper"),
}


def summarize(seconds_per_batch: list[float], *, batch_size: int, train_images: int, epochs: int) -> dict[str, float]:
    """Median and spread of per-batch times, and the projections they imply."""
    median = statistics.median(seconds_per_batch)
    batches_per_epoch = math.ceil(train_images / batch_size)
    epoch_seconds = median * batches_per_epoch
    return {
        "seconds_per_batch": median,
        "seconds_per_batch_min": min(seconds_per_batch),
        "seconds_per_batch_max": max(seconds_per_batch),
        "relative_spread": (max(seconds_per_batch) - min(seconds_per_batch)) / median if median > 0 else 0.0,
        "images_per_s": batch_size / median if median > 0 else float("inf"),
        "batches_per_epoch": batches_per_epoch,
        "epoch_seconds": epoch_seconds,
        "recipe_epochs": epochs,
        "recipe_hours": epoch_seconds * epochs / 3600,
    }


class PassCounter:
    """Counts the images that go through a model's forward, with and without autograd recording."""

    def __init__(self, *models: torch.nn.Module | None) -> None:
        self.grad_rows = 0
        self.nograd_rows = 0
        self._handles = [m.register_forward_pre_hook(self._hook) for m in models if m is not None]
        self._counting = True

    def _hook(self, module: torch.nn.Module, args: tuple) -> None:
        if not self._counting:
            return
        if torch.is_grad_enabled():
            self.grad_rows += args[0].shape[0]
        else:
            self.nograd_rows += args[0].shape[0]

    def remove(self) -> None:
        self._counting = False
        for handle in self._handles:
            handle.remove()


@dataclass
class PreparedProbe:
    """One method on one architecture, built and warmed up, ready to time loader batches."""

    method: str
    arch: str
    teacher_arch: str
    sigma: float
    cfg: ProbeConfig
    device: torch.device
    step: TrainStep
    teacher: FrozenTeacher | None
    batch: int
    hparams: object
    fwd_bwd_passes: float
    fwd_only_passes: float
    x: torch.Tensor
    y: torch.Tensor
    peak_memory_bytes: int = -1  # this probe's own CUDA peak (build + warm-up steps); -1 on a CPU
    epochs: int = 0  # the recipe's epochs (0: the method's own)
    recipe: str = ""  # "EPOCHSxBATCH": the recipe's epochs and batch (a profile may time smaller batches)
    kernel_seconds_per_batch: float = float("nan")  # GPU kernel-busy time (torch.profiler); NaN on a CPU

    def measure(self, batches: int) -> str:
        """How a row's epoch was obtained (the paper protocol's probes say more)."""
        return f"{batches} batches of one tensor, projected"

    def time_batches(self, batches: int, clock: Callable[[], float] = time.perf_counter) -> float:
        """Seconds per loader batch over ``batches`` consecutive batches."""
        synchronize(self.device)
        start = clock()
        for _ in range(batches):
            self.step(self.x, self.y)
        synchronize(self.device)
        return (clock() - start) / batches

    def row(self, times: list[float]) -> dict:
        """One timing-table row from per-repeat seconds per batch."""
        spec = get_method(self.method)
        options, device = self.cfg.engine_options(), self.device
        env = environment(device)
        epochs = self.epochs or spec.recipe.epochs
        wall = statistics.median(times)
        return {
            "method": self.method, "arch": self.arch, "teacher_arch": self.teacher_arch, "sigma": self.sigma,
            "batch_size": self.batch, "optimizer_steps_per_batch": self.step.chunks, "hparams": str(asdict(self.hparams)),
            "config": config_label(self.hparams), "recipe": self.recipe,
            "protocol": self.cfg.protocol, "measure": self.measure(self.cfg.batches),
            "kernel_seconds_per_batch": self.kernel_seconds_per_batch,
            "kernel_busy_fraction": self.kernel_seconds_per_batch / wall if wall > 0 else float("nan"),
            "hours_basis": "projected", "timed_batches": self.cfg.batches, "repeats": len(times),
            # forward passes over the batch's B images that are back-propagated / forward only (e.g. CRT's teacher)
            "fwd_bwd_passes": self.fwd_bwd_passes, "fwd_only_passes": self.fwd_only_passes,
            **summarize(times, batch_size=self.batch, train_images=self.cfg.train_images, epochs=epochs),
            "peak_memory_bytes": self.peak_memory_bytes,
            "precision": self.step.precision, "compile": options.compile, "channels_last": self.step.channels_last,
            "tf32": self.step.tf32,
            "teacher_precision": self.teacher.precision if self.teacher else "",
            "device": env["device"], "device_count": env["device_count"], "torch_version": env["torch"],
            "cuda_version": env["cuda"], "git_commit": env["git_commit"],
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }


def prepare(
    method: str,
    arch: str,
    *,
    sigma: float = 0.25,
    teacher_arch: str | None = "resnet110",
    cfg: ProbeConfig | None = None,
    device: torch.device | str = "cpu",
    recipe: str = "",
) -> PreparedProbe:
    """Build ``method`` on ``arch`` (and its teacher), count one batch's passes, run the warm-up.

    ``cfg.hparams[method]`` overrides the method's hyper-parameters; ``recipe`` (``"200x128"``) its epochs
    and batch size (standard training at the CRT authors' recipe beside Salman's 150 x 256).

    On CUDA the probe's peak memory is measured from here: what is allocated before it is the baseline
    (earlier probes still alive), the peak statistics are reset, and the peak over building it and its
    warm-up steps (at least one full step) minus the baseline is its ``peak_memory_bytes``.
    """
    cfg = cfg or ProbeConfig()
    device = torch.device(device)
    baseline = _start_peak(device)
    spec = get_method(method)
    hp = spec.make_hparams(cfg.hparams.get(method), sigma=sigma)
    epochs, recipe_batch = parse_recipe(recipe) or (spec.recipe.epochs, spec.recipe.batch_size)
    batch = cfg.batch_size or recipe_batch
    shape = dict(num_classes=cfg.num_classes, in_chans=cfg.in_chans, mean=[0.5] * cfg.in_chans,
                 std=[0.25] * cfg.in_chans)
    model = build_model(arch, **shape)
    frozen = None
    compose = spec.compose
    if compose is not None:  # e.g. a denoiser in front of a frozen classifier of ``arch``, also the teacher
        teacher_arch, frozen = arch, model
        model, _ = compose(frozen, hp, sigma=sigma, profile=cfg.profile, dataset="", results_root="")
    model = model.to(device).train()
    options = cfg.engine_options()
    teacher = None
    if spec.needs_teacher:
        teacher = FrozenTeacher(frozen if frozen is not None else build_model(teacher_arch or "resnet110", **shape),
                                (cfg.in_chans, cfg.image_size, cfg.image_size), device,
                                precision=options.teacher_precision, channels_last=options.channels_last,
                                fold=options.fold_teacher)
    # The last epoch: warm-ups (SmoothAdv epsilon, SmoothMix weight) are over, attacks at full strength.
    ctx = StepContext(sigma=sigma, hparams=hp, epoch=epochs - 1, epochs=epochs, teacher=teacher)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    step = TrainStep(spec, model, optimizer, ctx, device, options)
    x = torch.rand(batch, cfg.in_chans, cfg.image_size, cfg.image_size, device=device)
    y = torch.randint(0, cfg.num_classes, (batch,), device=device)
    # counts one (untimed) batch: what the time is made of; a composed model's passes are its trained part's
    counter = PassCounter(getattr(model, "trained_part", model), teacher)
    for _ in range(max(cfg.warmup, 1)):
        step(x, y)
        counter.remove()
    return PreparedProbe(method, arch, (teacher_arch or "resnet110") if spec.needs_teacher else "", sigma, cfg, device,
                         step, teacher, batch, hp, counter.grad_rows / batch, counter.nograd_rows / batch, x, y,
                         _peak_since(device, baseline), epochs, recipe or f"{epochs}x{recipe_batch}")


def kernel_seconds(p: PreparedProbe, batches: int = 2) -> float:
    """GPU kernel-busy seconds per loader batch of ``p`` (torch.profiler's CUDA kernel time over
    ``batches`` batches), NaN where the device gives none (a CPU). Beside the wall-clock seconds it says
    whether a step is launch-bound: kernels busy for a small fraction of the wall time."""
    if p.device.type != "cuda":
        return float("nan")
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        p.time_batches(batches)
    busy_us = sum(getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0.0))
                  for e in prof.key_averages())
    return busy_us / 1e6 / batches


def _tracks_memory(device: torch.device) -> bool:
    """Whether the allocator's statistics are read (CUDA); a CPU probe's peak is -1."""
    return device.type == "cuda"


def _start_peak(device: torch.device) -> int:
    """CUDA: the bytes allocated now (the baseline), with the peak statistics reset; -1 elsewhere."""
    if not _tracks_memory(device):
        return -1
    synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    return int(baseline)


def _peak_since(device: torch.device, baseline: int) -> int:
    """CUDA: the peak allocated since :func:`_start_peak` minus its baseline; -1 elsewhere."""
    if not _tracks_memory(device):
        return -1
    synchronize(device)
    return int(torch.cuda.max_memory_allocated(device)) - baseline


def probe(
    method: str,
    arch: str,
    *,
    sigma: float = 0.25,
    teacher_arch: str | None = "resnet110",
    cfg: ProbeConfig | None = None,
    device: torch.device | str = "cpu",
    clock: Callable[[], float] = time.perf_counter,
) -> dict:
    """Time ``method`` on ``arch`` on its own; returns one timing-table row."""
    cfg = cfg or ProbeConfig()
    prepared = prepare(method, arch, sigma=sigma, teacher_arch=teacher_arch, cfg=cfg, device=device)
    return prepared.row([prepared.time_batches(cfg.batches, clock) for _ in range(cfg.repeats)])
