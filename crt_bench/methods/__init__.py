"""Training methods: importing this package registers every method."""
from crt_bench.methods import consistency, crt, gaussian, macer, smoothadv, smoothmix  # noqa: F401  (registration)
from crt_bench.methods.registry import (
    MethodSpec,
    Recipe,
    StepContext,
    gaussian_noise,
    get_method,
    list_methods,
    register_method,
)

__all__ = ["MethodSpec", "Recipe", "StepContext", "gaussian_noise", "get_method", "list_methods", "register_method"]
