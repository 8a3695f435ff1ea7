"""Training-method registry: ``@register_method(...)`` on a method's loss function, as timm's ``@register_model``.

A method is a pure loss function ``loss(model, x, y, ctx) -> Tensor`` over one minibatch of clean
images in [0, 1]; it draws its own noise. The training loop never branches on a method's name:
everything a method needs beyond the batch (sigma, epoch, teacher, hyper-parameters) comes in ``ctx``,
and everything the loop must know about a method (its paper recipe, whether it needs a teacher, how
many optimizer steps it takes per loader batch) is declared at registration.

Adding a method is one file, ``methods/<name>.py``, with one decorator::

    @dataclass
    class ToyHParams:
        weight: float = 1.0

    @register_method("toy", hparams=ToyHParams, recipe=Recipe(...), reference="...")
    def toy_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
        return ctx.hparams.weight * F.cross_entropy(model(gaussian_noise(x, ctx.sigma)), y)

:mod:`crt_bench.methods` imports every module of the package (``pkgutil``; no hand-kept list), so the
decorator registers it; a method outside the package registers when its module is imported. The decorator
returns the function unchanged (tests call the losses directly). ``compose`` (denoised) is a function object.

Why the method modules can be imported without torch (``crt-bench --help`` and ``crt-bench list methods``
import them all; ``tests/test_layout.py`` checks that no torch is loaded): a method module binds torch,
``torch.nn.functional`` and the crt_bench modules that need torch with
:func:`crt_bench.core.lazy.lazy_module` (the real ``import`` under ``TYPE_CHECKING``, so type checkers and
IDEs see the real modules), and its annotations are strings (``from __future__ import annotations``). The
decorator then holds the real function object: grep, go-to-definition and type checkers follow it, with no
``"module:function"`` strings resolved at run time. (The alternative, a torch-free table of the methods
kept beside the decorators and checked against them by a test, would keep two copies of each entry.)
"""
from __future__ import annotations

import dataclasses
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


ComposeFn = Callable[..., "tuple[nn.Module, str]"]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    loss: LossFn  # the decorated loss function
    hparams: type  # a dataclass whose field defaults are the paper defaults
    recipe: Recipe
    reference: str
    needs_teacher: bool = False
    # Optimizer steps per loader batch: the batch is split into this many minibatches, each with its
    # own step (SmoothAdv/Consistency/SmoothMix with m noise samples). Called with the hparams.
    steps_per_batch: Callable[[Any], int] = field(default=lambda hp: 1)
    # Builds the trained module around the frozen teacher instead of a fresh classifier of the run's arch
    # (None: a fresh classifier): ``compose(teacher, hparams, *, sigma, profile, dataset, results_root)
    # -> (module, init_run_id)``; only the module's parameters that require gradients are optimized;
    # ``init_run_id`` names the run whose trained weights part of it starts from ("" if none; that run's
    # hours are counted there, once).
    compose: ComposeFn | None = None
    # Whether the hyper-parameters leave anything to train (False: the run assembles, 0 epochs).
    trains: Callable[[Any], bool] = field(default=lambda hp: True)

    def with_loss(self, loss: LossFn) -> MethodSpec:
        """This method with another loss function (tests wrap the real one)."""
        return dataclasses.replace(self, loss=loss)

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
L = TypeVar("L", bound=Callable[..., Any])


def nearest_sigma(table: Mapping[float, V], sigma: float) -> V:
    """The entry of a per-sigma table of paper defaults for the tabulated sigma closest to ``sigma``
    (ties: the smaller sigma)."""
    return table[min(table, key=lambda s: (abs(s - sigma), s))]


_METHODS: dict[str, MethodSpec] = {}
OPTIMIZERS = ("sgd", "adam")


def register_method(
    name: str,
    *,
    hparams: type,
    recipe: Recipe,
    reference: str,
    needs_teacher: bool = False,
    steps_per_batch: Callable[[Any], int] | None = None,
    compose: ComposeFn | None = None,
    trains: Callable[[Any], bool] | None = None,
) -> Callable[[L], L]:
    """Decorator: register the decorated loss function as method ``name``; returns the function unchanged."""
    if name in _METHODS:
        raise ValueError(f"method {name!r} is registered twice")
    if recipe.optimizer not in OPTIMIZERS:
        raise ValueError(f"method {name!r}: optimizer must be one of {OPTIMIZERS}, got {recipe.optimizer!r}")
    if compose is not None and not callable(compose):
        raise ValueError(f"method {name!r}: compose must be a function, got {compose!r}")
    extra: dict[str, Any] = {"steps_per_batch": steps_per_batch} if steps_per_batch is not None else {}
    if trains is not None:
        extra["trains"] = trains

    def register(loss: L) -> L:
        if not callable(loss):
            raise ValueError(f"method {name!r}: @register_method goes on the loss function, got {loss!r}")
        if name in _METHODS:  # registered between the call and the decoration
            raise ValueError(f"method {name!r} is registered twice")
        _METHODS[name] = MethodSpec(name, loss, hparams, recipe, reference, needs_teacher, compose=compose, **extra)
        return loss

    return register


def get_method(name: str) -> MethodSpec:
    return _METHODS[check_choice("method", name, sorted(_METHODS))]


def list_methods() -> list[MethodSpec]:
    return [_METHODS[k] for k in sorted(_METHODS)]
