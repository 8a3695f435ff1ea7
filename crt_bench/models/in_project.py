"""The in-project architectures: the CIFAR ResNets (:mod:`crt_bench.models.cifar_resnet`), CRT's teachers, and
the test CNN of the smoke profile and the suite."""
from __future__ import annotations

from typing import TYPE_CHECKING

from crt_bench.core.lazy import lazy_module
from crt_bench.models.registry import register_arch

if TYPE_CHECKING:
    from torch import nn

    import crt_bench.models.cifar_resnet as cifar_resnet
else:  # imported when a model is first built (the catalogue is read without torch)
    nn = lazy_module("torch.nn")
    cifar_resnet = lazy_module("crt_bench.models.cifar_resnet")


@register_arch("resnet20", family="CIFAR ResNet", generation=2015, source="in-project",
               description="CIFAR ResNet-20 (BasicBlock 3x3, 16/32/64), proxy teacher")
def resnet20(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    return cifar_resnet.CifarResNet(20, num_classes, in_chans)


@register_arch("resnet110", family="CIFAR ResNet", generation=2015, source="in-project",
               description="CIFAR ResNet-110 (BasicBlock 18x3, 16/32/64), the papers' base classifier")
def resnet110(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    return cifar_resnet.CifarResNet(110, num_classes, in_chans)


@register_arch("tiny_cnn", family="test", generation=2012, source="in-project",
               description="two-conv CNN for the smoke profile and tests (seconds on a CPU)")
def tiny_cnn(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(in_chans, 16, 3, 1, 1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, 1, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(32, num_classes),
    )
