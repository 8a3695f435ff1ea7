"""timm architectures adapted to CIFAR-sized (32x32) inputs: the generation sequence of Figure 1.

ImageNet models shrink their input 4x before the first stage (a stride-2 stem convolution plus
max-pooling, two stride-2 convolutions, or a 4x4 patchify convolution). On a 32x32 image that
leaves 8x8 feature maps at the first stage and 1x1 maps long before the classifier, which ruins
accuracy. Each adaptation below changes only the stem (the first convolution's stride, the stem's
max-pool, the patch size), the same change the CIFAR versions of these networks make; every stage,
block and head after it is timm's own model, built by ``timm.create_model``:

* convolutional stems lose their downsampling: the stride-2 stem convolution runs at stride 1 (its
  weights and timm's initialisation are kept) and the stem max-pool, if any, is removed;
* patchify stems (ConvNeXt, ConvNeXt-V2) use 2x2 stride-2 patches instead of 4x4 stride-4;
* the ViT uses 4x4 patches and a positional embedding sized for 32x32 (8x8 = 64 tokens), resampled
  on the fly for other input sizes (28x28 gives 7x7 tokens).

The catalogue entries (:mod:`crt_bench.models.catalog`) are in release order; the name is timm's model
name (the ViT, re-created with another patch size, is named for its patch and input size) and a
lower-case family alias works too (``--arch densenet``). Weights are always randomly initialised: nothing is
fetched from a hub.
"""
from __future__ import annotations

import timm
import torch.nn.functional as F
from timm.layers import Conv2dSame
from timm.models.fastvit import MobileOneBlock
from torch import Tensor, nn



def create(model_name: str, num_classes: int, in_chans: int, **kwargs) -> nn.Module:
    return timm.create_model(model_name, pretrained=False, num_classes=num_classes, in_chans=in_chans, **kwargs)


def _unstride(conv: nn.Module) -> None:
    """Run a stride-2 stem convolution at stride 1, keeping its weights and 'same' padding.

    Fails loudly if timm's stem ever changes (not a Conv2d, already stride 1, or padded so that a
    stride-1 convolution would change the spatial size).
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"expected the stem convolution, got {type(conv).__name__}")
    if conv.stride == (1, 1):
        raise ValueError("the stem convolution already has stride 1")
    if not isinstance(conv, Conv2dSame):  # Conv2dSame computes its padding from the stride itself
        expected = tuple((k - 1) // 2 * d for k, d in zip(conv.kernel_size, conv.dilation))
        if conv.padding != expected:
            raise ValueError(f"stem padding {conv.padding} is not 'same' for kernel {conv.kernel_size}")
    conv.stride = (1, 1)


class PadToMultiple(nn.Module):
    """Zero-pad H and W (evenly on both sides) up to the next multiple of ``multiple``.

    A no-op on 32x32 inputs; lets networks whose shortcut pooling needs even feature maps at every
    downsampling (DLA) take 28x28 inputs (padded to 32x32).
    """

    def __init__(self, multiple: int) -> None:
        super().__init__()
        self.multiple = multiple

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        if ph == 0 and pw == 0:
            return x
        return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))

    def extra_repr(self) -> str:
        return f"multiple={self.multiple}"


# --------------------------------------------------------------------------------------------- 2015
def resnet18(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("resnet18", num_classes, in_chans)
    model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


# --------------------------------------------------------------------------------------------- 2016
def densenet121(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("densenet121", num_classes, in_chans)
    width = model.features.conv0.out_channels
    conv0 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(conv0.weight)  # timm's DenseNet initialisation
    model.features.conv0 = conv0
    model.features.pool0 = nn.Identity()
    return model


# --------------------------------------------------------------------------------------------- 2017
def resnext26ts(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("resnext26ts", num_classes, in_chans)
    _unstride(model.stem.conv1.conv)
    model.stem.pool = nn.Identity()
    return model


# --------------------------------------------------------------------------------------------- 2018
def dla46_c(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("dla46_c", num_classes, in_chans)
    # DLA's stem is base_layer (7x7, stride 1), level0 (stride 1) and level1 (stride 2); the four trees
    # after it each halve the map, and their max-pooled shortcuts need an even size every time, so the
    # input must be a multiple of 16 once level1 no longer downsamples.
    _unstride(model.level1[0])
    model.base_layer = nn.Sequential(PadToMultiple(16), *model.base_layer)
    return model


def mobilenetv2_100(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("mobilenetv2_100", num_classes, in_chans)
    _unstride(model.conv_stem)
    return model


# --------------------------------------------------------------------------------------------- 2019
def mobilenetv3_small_100(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("mobilenetv3_small_100", num_classes, in_chans)
    _unstride(model.conv_stem)
    return model


def efficientnet_b0(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("efficientnet_b0", num_classes, in_chans)
    _unstride(model.conv_stem)
    return model


# --------------------------------------------------------------------------------------------- 2020
def regnetx_002(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("regnetx_002", num_classes, in_chans)
    _unstride(model.stem.conv)
    return model


def vit_tiny_patch4_32(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    return create("vit_tiny_patch16_224", num_classes, in_chans, img_size=32, patch_size=4, dynamic_img_size=True)


# --------------------------------------------------------------------------------------------- 2021
def tf_efficientnetv2_b0(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("tf_efficientnetv2_b0", num_classes, in_chans)
    _unstride(model.conv_stem)
    return model


# --------------------------------------------------------------------------------------------- 2022
def convnext_atto(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("convnext_atto", num_classes, in_chans)
    width = model.stem[0].out_channels
    model.stem[0] = nn.Conv2d(in_chans, width, kernel_size=2, stride=2)
    return model


# --------------------------------------------------------------------------------------------- 2023
def convnextv2_atto(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("convnextv2_atto", num_classes, in_chans)
    width = model.stem[0].out_channels
    model.stem[0] = nn.Conv2d(in_chans, width, kernel_size=2, stride=2)
    return model


def fastvit_t8(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("fastvit_t8", num_classes, in_chans)
    old = model.stem[0]
    if old.stride != 2 or old.reparam_conv is not None:
        raise ValueError("unexpected FastViT stem")
    # The same train-time MobileOne block (3x3 branch + 1x1 scale branch) at stride 1.
    model.stem[0] = MobileOneBlock(old.in_chs, old.out_chs, kernel_size=old.kernel_size, stride=1,
                                   use_scale_branch=old.conv_scale is not None, act_layer=type(old.act))
    return model


def efficientvit_b0(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("efficientvit_b0", num_classes, in_chans)
    _unstride(model.stem.in_conv.conv)
    return model


# --------------------------------------------------------------------------------------------- 2024
def mobilenetv4_conv_small(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("mobilenetv4_conv_small", num_classes, in_chans)
    _unstride(model.conv_stem)
    return model
