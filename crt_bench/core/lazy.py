"""A module imported on first attribute use: ``torch = lazy_module("torch")``.

The method files (:mod:`crt_bench.methods`) hold their hyper-parameters, recipe and loss in one module, and
``crt-bench --help`` / ``crt-bench list methods`` import every method module; with ``torch`` (and the
crt_bench modules that need it) bound through :func:`lazy_module`, importing a method costs no torch: torch
is imported when a loss first runs (``torch.randn_like``, ``F.cross_entropy``, ``nn.Module``, ...).

Write it with the real import for type checkers and IDEs, which then see the real module::

    if TYPE_CHECKING:
        import torch
    else:
        torch = lazy_module("torch")

The first access of each attribute imports the module (:func:`importlib.import_module`) and caches the
attribute on the proxy, so later uses are plain attribute look-ups. ``tests/test_layout.py`` counts a
``lazy_module("crt_bench....")`` call as an import of that module (layers, cycles).
"""
from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any


class LazyModule(ModuleType):
    """Stands for module ``__name__``; imports it when an attribute is first read."""

    def _real(self) -> ModuleType:
        return importlib.import_module(self.__name__)

    def __getattr__(self, attr: str) -> Any:  # only called for attributes not cached yet
        if attr.startswith("__"):  # dunders (pickling, introspection): the real module's, uncached
            return getattr(self._real(), attr)
        value = getattr(self._real(), attr)
        setattr(self, attr, value)
        return value

    def __dir__(self) -> list[str]:
        return dir(self._real())

    def __repr__(self) -> str:
        return f"<lazy module {self.__name__!r}>"


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name`` that imports ``name`` on the first attribute access."""
    return LazyModule(name)
