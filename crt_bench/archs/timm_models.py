"""timm architectures adapted to CIFAR-sized (32x32) inputs.

ImageNet models shrink their input 4x in the stem (a stride-2 7x7 convolution plus max-pooling, or a
4x4 patchify convolution). On a 32x32 image that leaves 8x8 feature maps before the first stage and
1x1 maps long before the classifier, which ruins accuracy. Each adaptation below replaces only the
stem, the same change the CIFAR versions of these networks make; the rest is timm's own model.
Weights are always randomly initialised: nothing is fetched from a hub.
"""
from __future__ import annotations

import timm
from torch import nn

from crt_bench.archs.registry import register_arch


def create(model_name: str, num_classes: int, in_chans: int) -> nn.Module:
    return timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans)


@register_arch("resnet18", family="ResNet", generation=2015, source="timm:resnet18",
               description="timm ResNet-18 with a 3x3 stride-1 stem and no max-pool (CIFAR stem)")
def resnet18(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("resnet18", num_classes, in_chans)
    model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


@register_arch("convnext_atto", family="ConvNeXt", generation=2022, source="timm:convnext_atto",
               aliases=("convnext",),
               description="timm ConvNeXt-Atto (3.4M params) with a 2x2 stride-2 patchify stem")
def convnext_atto(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("convnext_atto", num_classes, in_chans)
    width = model.stem[0].out_channels
    model.stem[0] = nn.Conv2d(in_chans, width, kernel_size=2, stride=2)
    return model
