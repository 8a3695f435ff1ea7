"""Reading the CIFAR-10 python batches without letting them run code.

The CIFAR-10 files are Python pickles, and ``pickle.load`` calls whatever callable a file names: a
``--data-dir`` someone else prepared could run arbitrary code.  The real format holds only dicts,
lists, bytes/str, ints and numpy arrays, and a pickled numpy array needs exactly three globals
(``_reconstruct``, ``ndarray``, ``dtype``).  :class:`CifarUnpickler` resolves those and refuses every
other global before anything is called.  torchvision still does the downloading (md5-checked archive)
and the directory layout; only its ``pickle.load`` is replaced (:mod:`crt_bench.data.datasets`).
"""
from __future__ import annotations

import importlib
import pickle
from pathlib import Path
from typing import Any

import numpy as np

ALLOWED_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"),  # arrays pickled by numpy 1.x (the official files)
    ("numpy._core.multiarray", "_reconstruct"),  # arrays pickled by numpy 2.x
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
})


def _reconstruct() -> Any:
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            return importlib.import_module(module)._reconstruct
        except (ImportError, AttributeError):
            continue
    raise ImportError("numpy has no multiarray._reconstruct")


class CifarUnpickler(pickle.Unpickler):
    """An unpickler that knows only the globals of a pickled numpy array (:data:`ALLOWED_GLOBALS`)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"the file refers to {module}.{name}, which a CIFAR-10 batch never holds; refused without running "
                "it (only numpy arrays, lists, bytes, strings, numbers and dicts are read)")
        if name == "_reconstruct":
            return _reconstruct()
        return getattr(np, name)

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids never occur in a CIFAR-10 batch; refused")


def load_cifar_pickle(path: str | Path) -> dict[str, Any]:
    """One CIFAR-10 python file (``encoding="latin1"`` as torchvision reads it), through :class:`CifarUnpickler`."""
    with open(path, "rb") as f:
        obj = CifarUnpickler(f, encoding="latin1").load()
    if not isinstance(obj, dict):
        raise pickle.UnpicklingError(f"{path} holds a {type(obj).__name__}, not the dict of a CIFAR-10 batch")
    return obj
