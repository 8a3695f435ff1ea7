"""Methods (layer 4): the training methods' catalogue -> loss, hyper-parameters and recipes.

Importing the package registers every method.

May import: core, config, parallel, store.
"""
from crt_bench.methods import (consistency, crt, denoised, gaussian, macer, smoothadv, smoothmix,  # noqa: F401
                               standard)  # (registration)
