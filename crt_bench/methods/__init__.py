"""Methods (layer 4, above data and models: denoised's ``compose`` builds a model): the training methods'
catalogue -> loss, hyper-parameters and recipes.

One module per method (``methods/<name>.py``: hyper-parameters, recipe, and the loss under
``@register_method``, :mod:`~crt_bench.methods.registry`); :mod:`~crt_bench.methods.common` holds the losses'
shared building blocks. Importing the package imports every other module in it, so adding a method is
adding its file; none of them imports torch at import time (:mod:`crt_bench.core.lazy`).

May import: data, models, core, config, parallel, store.
"""
import importlib
import pkgutil

NOT_METHODS = frozenset({"registry", "common"})  # the registry and the losses' shared helpers

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in NOT_METHODS and not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")  # registration
