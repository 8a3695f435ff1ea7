"""ImageNet architectures at 224x224: torchvision's ResNet-18 and ResNet-50, as the CRT paper's ImageNet
experiment uses them (ResNet-18 teacher -> ResNet-50 student).

Registered as ``resnet18_224`` / ``resnet50_224``: the registry's ``resnet18`` is timm's ResNet-18 with
a 32x32 stem for CIFAR-sized inputs, a different network.  torchvision's definition is the one the
smoothing papers' ImageNet checkpoints use (Cohen et al., Salman et al.), so their released ImageNet
teachers load into these.  ``source`` is ``torchvision:...``: they are not part of the 32x32
generation sequence of Figure 1.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from crt_bench.core.lazy import lazy_module
from crt_bench.models.registry import register_arch

if TYPE_CHECKING:
    import torchvision
    from torch import nn
else:  # imported when a model is first built (the catalogue is read without torch)
    nn = lazy_module("torch.nn")
    torchvision = lazy_module("torchvision")


def _torchvision(name: str, num_classes: int, in_chans: int) -> nn.Module:
    model = getattr(torchvision.models, name)(weights=None, num_classes=num_classes)
    if in_chans != 3:
        model.conv1 = nn.Conv2d(in_chans, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model


@register_arch("resnet18_224", family="ResNet (ImageNet)", generation=2015, source="torchvision:resnet18",
               input_size=224,
               description="torchvision ResNet-18, 224x224 ImageNet stem: the paper's ImageNet teacher")
def resnet18_224(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    return _torchvision("resnet18", num_classes, in_chans)


@register_arch("resnet50_224", family="ResNet (ImageNet)", generation=2015, source="torchvision:resnet50",
               input_size=224,
               description="torchvision ResNet-50, 224x224 ImageNet stem: the paper's ImageNet student")
def resnet50_224(num_classes: int = 1000, in_chans: int = 3) -> nn.Module:
    return _torchvision("resnet50", num_classes, in_chans)
