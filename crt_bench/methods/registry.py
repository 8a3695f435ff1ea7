"""Training-method registry (torch-free: ``crt-bench list methods`` and ``--help`` read it without torch).

A method is a pure loss function ``loss(model, x, y, ctx) -> Tensor`` over one minibatch of clean
images in [0, 1]; it draws its own noise. The training loop never branches on a method's name:
everything a method needs beyond the batch (sigma, epoch, teacher, hyper-parameters) comes in ``ctx``,
and everything the loop must know about a method (its paper recipe, whether it needs a teacher, how
many optimizer steps it takes per loader batch) is declared at registration.

Adding a method: ``methods/<name>.py`` holds its hyper-parameters dataclass, its recipe and one
``register_method(name, loss="crt_bench.methods.losses.<name>:<function>", ...)`` call (no torch there);
``methods/losses/<name>.py`` holds the loss. ``MethodSpec.loss`` imports the loss on first use.
"""
from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Protocol, TypeVar

from crt_bench.core.checks import check_choice
from crt_bench.core.errors import CrtBenchError

if TYPE_CHECKING:  # annotations only: the registry is read without torch
    from torch import Tensor, nn


@dataclass(frozen=True)
class Recipe:
    """A method's published CIFAR-10 training recipe (step schedule; SGD unless ``optimizer="adam"``)."""

    epochs: int
    batch_size: int
    lr: float
    milestones: tuple[int, ...]  # epochs at which lr is multiplied by gamma
    gamma: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    source: str = ""
    optimizer: str = "sgd"  # "sgd" (with momentum) or "adam" (momentum unused)


@dataclass
class StepContext:
    """What a loss may use besides the batch. ``hparams`` is the method's own dataclass."""

    sigma: float
    hparams: Any
    epoch: int = 0
    epochs: int = 1
    step: int = 0
    teacher: nn.Module | None = None


class LossFn(Protocol):
    def __call__(self, model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor: ...


def resolve_reference(ref: str) -> Any:
    """The object a ``"package.module:name"`` reference names (imported on first use)."""
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class MethodSpec:
    name: str
    loss_ref: str  # "crt_bench.methods.losses.<name>:<function>": the loss, imported by ``loss``
    hparams: type  # a dataclass whose field defaults are the paper defaults
    recipe: Recipe
    reference: str
    needs_teacher: bool = False
    # Optimizer steps per loader batch: the batch is split into this many minibatches, each with its
    # own step (SmoothAdv/Consistency/SmoothMix with m noise samples). Called with the hparams.
    steps_per_batch: Callable[[Any], int] = field(default=lambda hp: 1)
    # "module:function" building the trained module around the frozen teacher instead of a fresh classifier
    # of the run's arch: ``compose(teacher, hparams, *, sigma, profile, dataset, results_root)
    # -> (module, init_run_id)``; only the
    # module's parameters that require gradients are optimized; ``init_run_id`` names the run whose trained
    # weights part of it starts from ("" if none; that run's hours are counted there, once).
    compose_ref: str = ""
    # Whether the hyper-parameters leave anything to train (False: the run assembles, 0 epochs).
    trains: Callable[[Any], bool] = field(default=lambda hp: True)
    loss_override: LossFn | None = field(default=None, repr=False, compare=False)  # a test's replacement

    @property
    def loss(self) -> LossFn:
        """The loss function (its module, and torch, are imported on first use)."""
        return self.loss_override if self.loss_override is not None else resolve_reference(self.loss_ref)

    @property
    def compose(self) -> Callable[..., tuple[nn.Module, str]] | None:
        """The ``compose`` function (imported on first use), or None: the run trains a fresh classifier."""
        return resolve_reference(self.compose_ref) if self.compose_ref else None

    def with_loss(self, loss: LossFn) -> MethodSpec:
        """This method with another loss function (tests wrap the real one)."""
        return dataclasses.replace(self, loss_override=loss)

    def make_hparams(self, overrides: dict[str, str | float | int] | None = None, sigma: float | None = None) -> Any:
        """The paper defaults (for ``sigma``, where the paper varies them) with ``overrides`` applied.

        Strings are converted to the field's type. A hyper-parameter class whose defaults depend on
        sigma provides ``classmethod for_sigma(sigma) -> instance``; one with a class attribute ``ALIASES``
        (``{"m": "num_noise_vec"}``) also takes those names for its fields.
        """
        per_sigma = getattr(self.hparams, "for_sigma", None)
        hp = per_sigma(sigma) if (per_sigma is not None and sigma is not None) else self.hparams()
        fields = {f.name: f for f in dataclasses.fields(hp)}
        aliases = getattr(self.hparams, "ALIASES", {})  # the paper's symbols of some fields (SmoothAdv's m, T)
        for key, value in (overrides or {}).items():
            key = aliases.get(key, key)
            if key not in fields:
                valid = ", ".join(fields) or "(none)"
                raise CrtBenchError(f"method {self.name!r} has no hyper-parameter {key!r}; valid: {valid}")
            default = getattr(hp, key)
            try:
                value = type(default)(value) if not isinstance(default, bool) else _parse_bool(value)
            except (TypeError, ValueError):
                raise CrtBenchError(f"hyper-parameter {key}={value!r} is not a valid {type(default).__name__}") from None
            setattr(hp, key, value)
        check = getattr(hp, "validate", None)
        if check is not None:
            check()
        return hp


def config_label(hparams: object) -> str:
    """A hyper-parameter configuration in words: its own ``label()`` (SmoothAdv's names the published
    model) or ``k=v`` pairs."""
    label = getattr(hparams, "label", None)
    if label is not None:
        return label()
    return " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in dataclasses.asdict(hparams).items())


def _parse_bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(value)


V = TypeVar("V")


def nearest_sigma(table: Mapping[float, V], sigma: float) -> V:
    """The entry of a per-sigma table of paper defaults for the tabulated sigma closest to ``sigma``
    (ties: the smaller sigma)."""
    return table[min(table, key=lambda s: (abs(s - sigma), s))]


_METHODS: dict[str, MethodSpec] = {}
OPTIMIZERS = ("sgd", "adam")


def register_method(
    name: str,
    *,
    loss: str,
    hparams: type,
    recipe: Recipe,
    reference: str,
    needs_teacher: bool = False,
    steps_per_batch: Callable[[Any], int] | None = None,
    compose: str = "",
    trains: Callable[[Any], bool] | None = None,
) -> MethodSpec:
    """Register method ``name``; ``loss`` (and ``compose``, if given) is ``"module:function"``, imported on first use."""
    if name in _METHODS:
        raise ValueError(f"method {name!r} is registered twice")
    if ":" not in loss:
        raise ValueError(f"method {name!r}: loss must be 'module:function', got {loss!r}")
    if compose and ":" not in compose:
        raise ValueError(f"method {name!r}: compose must be 'module:function', got {compose!r}")
    if recipe.optimizer not in OPTIMIZERS:
        raise ValueError(f"method {name!r}: optimizer must be one of {OPTIMIZERS}, got {recipe.optimizer!r}")
    extra: dict[str, Any] = {"steps_per_batch": steps_per_batch} if steps_per_batch is not None else {}
    if trains is not None:
        extra["trains"] = trains
    _METHODS[name] = MethodSpec(name, loss, hparams, recipe, reference, needs_teacher, compose_ref=compose, **extra)
    return _METHODS[name]


def get_method(name: str) -> MethodSpec:
    return _METHODS[check_choice("method", name, sorted(_METHODS))]


def list_methods() -> list[MethodSpec]:
    return [_METHODS[k] for k in sorted(_METHODS)]

