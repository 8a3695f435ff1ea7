"""Run configuration: dataclasses, the profiles, and how a run's settings are resolved.

A run's settings come from three layers, later ones winning: the method's paper recipe
(``crt_bench.methods``), the profile (smoke / cpu / paper), and explicit command-line flags.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from crt_bench.errors import CrtBenchError

if TYPE_CHECKING:
    from crt_bench.train_step import EngineOptions


def check_sigma(sigma: float) -> float:
    """``sigma`` as a float, or one clear error unless it is finite and > 0.

    ``inf`` passes a plain ``sigma > 0`` and started a run that then "diverged"; ``nan`` fails every
    comparison silently.  Every command that takes a sigma calls this before any work.
    """
    value = float(sigma)
    if not (math.isfinite(value) and value > 0):
        raise CrtBenchError(f"sigma must be > 0 and finite (noise standard deviation in [0,1] pixel units), "
                            f"got {sigma}")
    return value


@dataclass
class CertifyConfig:
    """Cohen et al.'s CERTIFY settings; the defaults are the papers' (N0=100, N=100,000, alpha=0.001)."""

    n0: int = 100
    n: int = 100_000
    alpha: float = 0.001
    batch: int | None = None  # noisy samples per forward; None: the engine chooses (memory on GPU, 128 on CPU)
    precision: str = "fp32"  # forward precision: fp32 | tf32 | bf16 | fp16 (noise is always float32)
    compile: bool = False  # torch.compile the base classifier
    subset: str = "all"  # "all", "skip:K", "range:A:B" (see crt_bench.certify.parse_subset)

    def validate(self) -> None:
        if self.n0 < 1 or self.n < 1:
            raise CrtBenchError(f"n0 and n must be >= 1, got n0={self.n0}, n={self.n}")
        if not 0.0 < self.alpha < 1.0:
            raise CrtBenchError(f"alpha must lie in (0, 1), got {self.alpha}")
        if self.batch is not None and self.batch < 1:
            raise CrtBenchError(f"batch must be >= 1, got {self.batch}")
        from crt_bench.certify import check_precision

        check_precision(self.precision)


@dataclass(frozen=True)
class Profile:
    """How much of the real experiment to run. ``None`` means: the method's paper recipe.

    ``epoch_scale`` multiplies every method's recipe epochs (and lr milestones) by the same factor, so
    that a shortened profile still compares recipe against recipe (CRT 200 : SmoothMix 150 : MACER 440).
    """

    name: str
    dataset: str
    description: str
    epoch_scale: float = 1.0
    batch_size: int | None = None
    train_limit: int | None = None
    test_limit: int | None = None
    certify: CertifyConfig = field(default_factory=CertifyConfig)


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "smoke", "synthetic", "synthetic data, a few epochs, N=500: seconds on a CPU; the test suite's path",
            epoch_scale=0.02, batch_size=64, train_limit=1024, test_limit=256,
            certify=CertifyConfig(n0=50, n=500, alpha=0.001, subset="range:0:20"),
        ),
        Profile(
            # The paper profile's code path (each recipe's batch size and settings, CIFAR-10's 32x32x3 and 10
            # classes, the CUDA engine defaults: bf16 autocast, channels-last, folded bf16 teacher) at the
            # smallest size that runs all of it: one epoch per method (any factor below 1/880 rounds every
            # recipe to 1) on 512 synthetic images, CERTIFY at the paper's N0 and alpha with N=1,000 on 8 images.
            "gpu-smoke", "synthetic", "the paper profile's code path on synthetic CIFAR-10-shaped data: each "
            "recipe's batch size, one epoch per method on 512 images, N=1,000 on 8 images: minutes on one GPU",
            epoch_scale=0.001, train_limit=512,
            certify=CertifyConfig(n0=100, n=1_000, alpha=0.001, subset="range:0:8"),
        ),
        Profile(
            # Sized by measurement (2 shared cores, see crt_bench.reproduce.plan_for): about 55 minutes of
            # make reproduce. Cheaper choices: 4,000 training images, bf16 certification forward (the noise
            # stays float32), 100 test images at N=10,000.
            "cpu", "fashion-mnist", "Fashion-MNIST, 0.055 x each recipe on 4,000 images, 100 test images at "
            "N=10,000 (bf16 forward): under an hour on 2 cores",
            epoch_scale=0.055, batch_size=128, train_limit=4000, test_limit=None,
            certify=CertifyConfig(n0=100, n=10_000, alpha=0.001, precision="bf16", subset="skip:100"),
        ),
        Profile(
            # Meets every number of the evidence issue: 500 test images at N=10,000; 12,000 training images
            # at 0.1 x each recipe (SmoothMix 15 epochs, CRT 20), enough for the step schedule's plateau.
            "cpu-full", "fashion-mnist", "Fashion-MNIST, 0.1 x each recipe on 12,000 images, 500 test images at "
            "N=10,000 (bf16 forward), and a 3-link recursive-CRT chain: about 5.5 hours on 2 cores",
            epoch_scale=0.1, batch_size=128, train_limit=12_000, test_limit=None,
            certify=CertifyConfig(n0=100, n=10_000, alpha=0.001, precision="bf16", subset="skip:20"),
        ),
        Profile(
            "paper", "cifar10", "CIFAR-10 at the papers' recipes and CERTIFY N=100,000 (a GPU's work)",
            certify=CertifyConfig(n0=100, n=100_000, alpha=0.001, subset="all"),
        ),
        Profile(
            # The CRT ImageNet config (official configs/imagenet/xfer.yml): ResNet-18 teacher -> ResNet-50
            # student, 90 epochs, batch 400, SGD lr 0.1, momentum 0.9, wd 1e-4 (= the CRT recipe's optimizer),
            # so 0.45 x CRT's 200 epochs; its lr milestones are not in the shipped config: the recipe's
            # proportions (45, 67) stand in. Certification: 500 validation images, every 100th (crt_bench.imagenet).
            "imagenet", "imagenet", "ImageNet (--data-dir with train/ val/): the CRT paper's ResNet-18 -> ResNet-50 "
            "config, 90 CRT epochs, batch 400, 500 val images at N=100,000 (GPU-days; use torchrun)",
            epoch_scale=0.45, batch_size=400,
            certify=CertifyConfig(n0=100, n=100_000, alpha=0.001, subset="skip:100"),
        ),
    )
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise CrtBenchError(f"unknown profile {name!r}; valid names: {', '.join(PROFILES)}")
    return PROFILES[name]


@dataclass
class RunConfig:
    """Everything that determines a training run; stored as JSON with the run."""

    method: str
    arch: str
    dataset: str
    profile: str
    sigma: float
    epochs: int
    batch_size: int
    lr: float
    milestones: tuple[int, ...]
    gamma: float
    momentum: float
    weight_decay: float
    seed: int = 0
    teacher: str | None = None  # a run id or a checkpoint path
    teacher_input_layer: str = "normalize"  # for reference checkpoints: "normalize" or "center" (Salman)
    teacher_dedicated: bool = False  # the teacher was trained only for this student: its hours count here
    job_key: str = ""  # set by the grid runner (crt_bench.launch): finds this run again on re-runs
    hparams: dict[str, Any] = field(default_factory=dict)  # the method's hyper-parameters, resolved
    train_limit: int | None = None
    test_limit: int | None = None
    data_dir: str | None = None
    device: str = "auto"
    amp: bool = True  # bf16 autocast; only ever used on CUDA
    channels_last: bool | None = None  # NHWC student and batches; None: for conv nets (crt_bench.train_step)
    compile: bool = False  # torch.compile the student's forward
    teacher_precision: str = "auto"  # CRT teacher forward: auto (bf16 where native) | fp32 | bf16
    profile_steps: int = 0  # > 0: torch.profiler trace of this many steps of the first epoch (crt_bench.profiling)
    epoch_scale: float | None = None  # the factor that made `epochs` from the recipe's; None: epochs given explicitly
    recipe_epochs: int = 0  # the method's recipe epochs (0: not recorded, rows written before the field existed)
    sync_bn: bool = False  # data-parallel runs: batch-norm statistics over the global batch (crt_bench.distributed)
    tf32: bool = False  # TF32 float32 matmuls/convolutions in training (Ampere+ GPUs; crt_bench.tf32); off: IEEE

    def engine_options(self) -> EngineOptions:
        from crt_bench.train_step import EngineOptions  # lazily: crt_bench.train_step imports the methods

        return EngineOptions(amp=self.amp, channels_last=self.channels_last, compile=self.compile,
                             teacher_precision=self.teacher_precision, tf32=self.tf32)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        data = json.loads(text)
        data["milestones"] = tuple(data["milestones"])
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def scaled_epochs(recipe_epochs: int, scale: float) -> int:
    """A recipe's epochs times a profile's factor, rounded half up, at least 1."""
    if not scale > 0:
        raise CrtBenchError(f"epoch scale must be > 0, got {scale}")
    return max(1, math.floor(recipe_epochs * scale + 0.5))


@dataclass(frozen=True)
class ScaledRecipe:
    """One method's schedule under a profile's factor: what the banner prints and the run records."""

    method: str
    scale: float
    recipe_epochs: int
    recipe_milestones: tuple[int, ...]
    epochs: int
    milestones: tuple[int, ...]

    def describe(self) -> str:
        decays = f"lr decays at {', '.join(map(str, self.milestones))}" if self.milestones else "no lr decay"
        return f"{self.method} {self.epochs} ({decays})"


def scaled_recipe(method: str, scale: float) -> ScaledRecipe:
    """``method``'s recipe epochs and milestones times ``scale`` (see :func:`scaled_milestones`)."""
    from crt_bench.methods import get_method

    recipe = get_method(method).recipe
    epochs = scaled_epochs(recipe.epochs, scale)
    return ScaledRecipe(method, scale, recipe.epochs, tuple(recipe.milestones), epochs,
                        scaled_milestones(recipe.milestones, recipe.epochs, epochs))


def describe_scale(scale: float, methods: list[str]) -> str:
    """``epochs = 0.1 x each recipe: gaussian 15 (lr decays at 5, 10), crt 20 (...)`` for a banner."""
    parts = "; ".join(scaled_recipe(m, scale).describe() for m in methods)
    return f"epochs = {scale:g} x each method's recipe: {parts}"


def scaled_milestones(milestones: tuple[int, ...], recipe_epochs: int, epochs: int) -> tuple[int, ...]:
    """Keep the schedule's shape when a profile shortens training (e.g. 100/200 -> 2/4)."""
    if epochs == recipe_epochs:
        return tuple(milestones)
    scaled: list[int] = []
    for m in milestones:
        epoch = max(round(m * epochs / recipe_epochs), scaled[-1] + 1 if scaled else 1)
        if epoch < epochs:  # a decay must leave at least one epoch to act on; too short runs drop it
            scaled.append(epoch)
    return tuple(scaled)


def lr_at_epoch(lr: float, milestones: tuple[int, ...], gamma: float, epoch: int) -> float:
    """Step schedule: lr * gamma^(number of milestones <= epoch), epochs counted from 0."""
    return lr * gamma ** sum(1 for m in milestones if epoch >= m)


def _first_given(*values: int | None) -> int:
    return next(v for v in values if v is not None)


def resolve_run_config(
    method: str,
    arch: str,
    *,
    profile: str = "smoke",
    dataset: str | None = None,
    sigma: float = 0.25,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int = 0,
    teacher: str | None = None,
    teacher_input_layer: str = "normalize",
    teacher_dedicated: bool = False,
    job_key: str = "",
    hparams: dict[str, str] | None = None,
    train_limit: int | None = None,
    test_limit: int | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    amp: bool = True,
    channels_last: bool | None = None,
    compile: bool = False,
    teacher_precision: str = "auto",
    profile_steps: int = 0,
    epoch_scale: float | None = None,
    tf32: bool = False,
) -> RunConfig:
    """Recipe, then profile, then explicit arguments. Validates every name and number.

    Epochs: explicit ``epochs`` win; else ``epoch_scale`` (or the profile's) times the method's recipe
    epochs (:func:`scaled_epochs`). Milestones keep the recipe's proportions either way.
    """
    from crt_bench.archs import get_arch
    from crt_bench.data import dataset_info
    from crt_bench.methods import get_method

    spec = get_method(method)
    arch = get_arch(arch).name  # an alias (convnext) is stored under its canonical name (convnext_atto)
    prof = get_profile(profile)
    dataset = dataset or prof.dataset
    dataset_info(dataset)
    check_sigma(sigma)
    if spec.needs_teacher and not teacher:
        raise CrtBenchError(
            f"method {method!r} needs a certifiably robust teacher: pass --teacher RUN_ID (a finished run, e.g. the "
            f"id printed last by `crt-bench run --method smoothmix --arch resnet20 --profile {profile}`), a "
            "checkpoint released with the smoothing papers, or let `crt-bench proxy --student-arch "
            f"{arch}` train a proxy teacher and then this student")
    from crt_bench.checkpoint import INPUT_LAYERS

    if teacher_input_layer not in INPUT_LAYERS:
        raise CrtBenchError(f"--teacher-input-layer must be one of {', '.join(INPUT_LAYERS)}, got {teacher_input_layer!r}")
    if teacher and not spec.needs_teacher:
        raise CrtBenchError(f"method {method!r} takes no teacher (got --teacher {teacher})")
    recipe = spec.recipe
    scale = None
    if epochs is None:
        scale = float(epoch_scale if epoch_scale is not None else prof.epoch_scale)
        epochs = scaled_epochs(recipe.epochs, scale)
    batch_size = _first_given(batch_size, prof.batch_size, recipe.batch_size)
    for label, value in (("epochs", epochs), ("batch size", batch_size)):
        if value < 1:
            raise CrtBenchError(f"{label} must be >= 1, got {value}")
    if lr is not None and not lr > 0:
        raise CrtBenchError(f"learning rate must be > 0, got {lr}")
    if profile_steps < 0:
        raise CrtBenchError(f"--profile-steps must be >= 0, got {profile_steps}")
    from crt_bench.train_step import check_teacher_precision

    check_teacher_precision(teacher_precision)
    hp = spec.make_hparams(hparams, sigma=float(sigma))
    return RunConfig(
        method=method,
        arch=arch,
        dataset=dataset,
        profile=profile,
        sigma=float(sigma),
        epochs=int(epochs),
        batch_size=int(batch_size),
        lr=float(lr if lr is not None else recipe.lr),
        milestones=scaled_milestones(recipe.milestones, recipe.epochs, int(epochs)),
        gamma=recipe.gamma,
        momentum=recipe.momentum,
        weight_decay=recipe.weight_decay,
        seed=seed,
        teacher=teacher,
        teacher_input_layer=teacher_input_layer,
        teacher_dedicated=teacher_dedicated,
        job_key=job_key,
        hparams=dataclasses.asdict(hp),
        train_limit=train_limit if train_limit is not None else prof.train_limit,
        test_limit=test_limit if test_limit is not None else prof.test_limit,
        data_dir=data_dir,
        device=device,
        amp=amp,
        channels_last=channels_last,
        compile=bool(compile),
        teacher_precision=teacher_precision,
        profile_steps=int(profile_steps),
        epoch_scale=scale,
        recipe_epochs=int(recipe.epochs),
        tf32=bool(tf32),
    )
