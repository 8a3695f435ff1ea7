"""Architectures: importing this package registers every entry."""
from crt_bench.archs import cifar_resnet, imagenet_models, timm_models  # noqa: F401  (registration side effects)
from crt_bench.archs.registry import (
    ArchSpec,
    NormalizeLayer,
    build_model,
    count_parameters,
    get_arch,
    list_archs,
    register_arch,
)
from crt_bench.archs.stats import arch_stats, generations, is_generation

__all__ = [
    "ArchSpec", "NormalizeLayer", "arch_stats", "build_model", "count_parameters", "generations", "get_arch",
    "is_generation", "list_archs", "register_arch",
]
