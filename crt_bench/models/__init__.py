"""Models (layer 4): the architecture catalogue -> ``nn.Module``, model files, batch-norm folding.

Owns: the registry of architectures (:mod:`~crt_bench.models.registry`), the builders (CIFAR ResNets, timm
families, ImageNet models), :mod:`~crt_bench.models.build` (normalisation in front), model files
(:mod:`~crt_bench.models.files`), :mod:`~crt_bench.models.bn_fold` and :mod:`~crt_bench.models.stats`.
May import: core, config, parallel, store (not methods: the methods sit above the models).

Importing the package registers every architecture: the builder modules below carry ``@register_arch`` on
each builder and bind torch, timm and torchvision lazily (imported when a model is first built). Their
order is the catalogue's (``generations()`` keeps registration order within a release year).
"""
from crt_bench.models import imagenet_models, in_project, timm_models  # noqa: F401  (registration)
