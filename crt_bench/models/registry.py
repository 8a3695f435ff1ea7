"""Architecture registry (torch-free): ``@register_arch(name, ...)`` on each builder function.

The builders live in :mod:`crt_bench.models.in_project` (the CIFAR ResNets, the test CNN),
:mod:`crt_bench.models.imagenet_models` (torchvision at 224x224) and :mod:`crt_bench.models.timm_models`
(the generation sequence); importing :mod:`crt_bench.models` imports the three, which bind torch, timm and
torchvision through :func:`crt_bench.core.lazy.lazy_module`, so reading the catalogue (``--help``,
``list archs``) imports none of them: they are imported when a model is first built.

Every entry knows where it comes from (in-project or timm), which family and generation (release
year) it belongs to, and builds a base classifier for a given number of classes and input channels.
``build_model`` wraps it as ``Sequential(NormalizeLayer, net)``: inputs stay in [0, 1] pixel space so
that Gaussian noise is added before normalization, as in the randomized-smoothing reference code.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from crt_bench.core.checks import check_choice

if TYPE_CHECKING:  # annotations only: the catalogue is read without torch
    from torch import nn


Builder = Callable[..., "nn.Module"]  # builder(num_classes=..., in_chans=...) -> nn.Module


@dataclass(frozen=True)
class ArchSpec:
    name: str
    builder: Builder  # the decorated function
    family: str
    generation: int  # release year of the architecture family
    source: str  # "in-project" or "timm:<model name>"
    input_size: int = 32  # the square input size the adaptation is built for
    description: str = ""
    aliases: tuple[str, ...] = ()


_ARCHS: dict[str, ArchSpec] = {}
_ALIASES: dict[str, str] = {}


def register_arch(
    name: str,
    *,
    family: str,
    generation: int,
    source: str,
    input_size: int = 32,
    description: str = "",
    aliases: Sequence[str] = (),
) -> Callable[[Builder], Builder]:
    """Decorator: register the decorated ``builder(num_classes, in_chans) -> nn.Module`` under ``name`` and
    its aliases; the function is returned unchanged."""
    if name in _ARCHS or name in _ALIASES:
        raise ValueError(f"architecture {name!r} is registered twice")
    taken = [a for a in aliases if a in _ARCHS or a in _ALIASES]
    if taken:
        raise ValueError(f"architecture {name!r}: alias {taken[0]!r} is registered already")

    def register(builder: Builder) -> Builder:
        if not callable(builder):
            raise ValueError(f"architecture {name!r}: the builder must be a function, got {builder!r}")
        _ARCHS[name] = ArchSpec(name, builder, family, generation, source, input_size, description, tuple(aliases))
        for alias in aliases:
            _ALIASES[alias] = name
        return builder

    return register


def list_archs() -> list[ArchSpec]:
    """All registered architectures, oldest generation first."""
    return sorted(_ARCHS.values(), key=lambda s: (s.generation, s.name))


def get_arch(name: str) -> ArchSpec:
    key = _ALIASES.get(name, name)
    if key not in _ARCHS:
        check_choice("architecture", name, [s.name for s in list_archs()])
    return _ARCHS[key]


def is_generation(spec: ArchSpec) -> bool:
    """Whether ``spec`` belongs to the generation sequence: a timm family, not a test model."""
    return spec.family != "test" and spec.source.startswith("timm:")


def generations() -> list[ArchSpec]:
    """The generation entries, oldest release year first (same year: registration order, the order of
    definition in :mod:`crt_bench.models.timm_models`, which keeps release order)."""
    # _ARCHS keeps registration order; list_archs() breaks ties by name instead.
    return sorted((s for s in _ARCHS.values() if is_generation(s)), key=lambda s: s.generation)
