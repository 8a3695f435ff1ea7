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

The builders below are in release order (``generations()`` keeps it within a year); the name is timm's model
name (the ViT, re-created with another patch size, is named for its patch and input size) and a
lower-case family alias works too (``--arch densenet``). Weights are always randomly initialised: nothing is
fetched from a hub.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from crt_bench.core.lazy import lazy_module
from crt_bench.models.registry import register_arch

if TYPE_CHECKING:
    import timm
    import timm.layers as timm_layers
    import timm.models.fastvit as fastvit
    from torch import nn

    import crt_bench.models.layers as layers
else:  # imported when a model is first built (the catalogue is read without torch or timm)
    timm = lazy_module("timm")
    timm_layers = lazy_module("timm.layers")
    fastvit = lazy_module("timm.models.fastvit")
    nn = lazy_module("torch.nn")
    layers = lazy_module("crt_bench.models.layers")


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
    if not isinstance(conv, timm_layers.Conv2dSame):  # Conv2dSame computes its padding from the stride itself
        expected = tuple((k - 1) // 2 * d for k, d in zip(conv.kernel_size, conv.dilation))
        if conv.padding != expected:
            raise ValueError(f"stem padding {conv.padding} is not 'same' for kernel {conv.kernel_size}")
    conv.stride = (1, 1)


# --------------------------------------------------------------------------------------------- 2015
@register_arch("resnet18", family="ResNet", generation=2015, source="timm:resnet18", aliases=("resnet",),
               description="timm ResNet-18 with a 3x3 stride-1 stem and no max-pool (CIFAR stem)")
def resnet18(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("resnet18", num_classes, in_chans)
    model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, 1, 1, bias=False)
    model.maxpool = nn.Identity()
    return model


# --------------------------------------------------------------------------------------------- 2016
@register_arch("densenet121", family="DenseNet", generation=2016, source="timm:densenet121", aliases=("densenet",),
               description="timm DenseNet-121 (7.0M params) with a 3x3 stride-1 stem and no max-pool (CIFAR stem)")
def densenet121(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("densenet121", num_classes, in_chans)
    width = model.features.conv0.out_channels
    conv0 = nn.Conv2d(in_chans, width, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(conv0.weight)  # timm's DenseNet initialisation
    model.features.conv0 = conv0
    model.features.pool0 = nn.Identity()
    return model


# --------------------------------------------------------------------------------------------- 2017
@register_arch("resnext26ts", family="ResNeXt", generation=2017, source="timm:resnext26ts", aliases=("resnext",),
               description="timm ResNeXt-26-TS (8.3M params; tiered 3-conv stem, SiLU) with the stem's "
                           "first convolution at stride 1 and no max-pool")
def resnext26ts(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("resnext26ts", num_classes, in_chans)
    _unstride(model.stem.conv1.conv)
    model.stem.pool = nn.Identity()
    return model


# --------------------------------------------------------------------------------------------- 2018
@register_arch("dla46_c", family="DLA", generation=2018, source="timm:dla46_c", aliases=("dla",),
               description="timm DLA-46-C (1.0M params) with level1 at stride 1: the first tree (level2) "
                           "sees the full 32x32 input; inputs are zero-padded to a multiple of 16 (28 -> 32)")
def dla46_c(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("dla46_c", num_classes, in_chans)
    # DLA's stem is base_layer (7x7, stride 1), level0 (stride 1) and level1 (stride 2); the four trees
    # after it each halve the map, and their max-pooled shortcuts need an even size every time, so the
    # input must be a multiple of 16 once level1 no longer downsamples.
    _unstride(model.level1[0])
    model.base_layer = nn.Sequential(layers.PadToMultiple(16), *model.base_layer)
    return model


@register_arch("mobilenetv2_100", family="MobileNetV2", generation=2018, source="timm:mobilenetv2_100",
               aliases=("mobilenetv2",),
               description="timm MobileNetV2-1.0 (2.2M params) with a stride-1 stem convolution")
def mobilenetv2_100(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("mobilenetv2_100", num_classes, in_chans)
    _unstride(model.conv_stem)
    return model


# --------------------------------------------------------------------------------------------- 2019
@register_arch("mobilenetv3_small_100", family="MobileNetV3", generation=2019, source="timm:mobilenetv3_small_100",
               aliases=("mobilenetv3",),
               description="timm MobileNetV3-Small-1.0 (1.5M params) with a stride-1 stem convolution")
def mobilenetv3_small_100(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("mobilenetv3_small_100", num_classes, in_chans)
    _unstride(model.conv_stem)
    return model


@register_arch("efficientnet_b0", family="EfficientNet", generation=2019, source="timm:efficientnet_b0",
               aliases=("efficientnet",),
               description="timm EfficientNet-B0 (4.0M params) with a stride-1 stem convolution")
def efficientnet_b0(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("efficientnet_b0", num_classes, in_chans)
    _unstride(model.conv_stem)
    return model


# --------------------------------------------------------------------------------------------- 2020
@register_arch("regnetx_002", family="RegNet", generation=2020, source="timm:regnetx_002",
               aliases=("regnet", "regnetx"),
               description="timm RegNetX-200MF (2.3M params) with a stride-1 stem convolution")
def regnetx_002(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("regnetx_002", num_classes, in_chans)
    _unstride(model.stem.conv)
    return model


@register_arch("vit_tiny_patch4_32", family="ViT", generation=2020, source="timm:vit_tiny_patch16_224",
               aliases=("vit", "vit_tiny"),
               description="timm ViT-Tiny (5.4M params; depth 12, width 192) re-created with 4x4 patches and a "
                           "positional embedding for 32x32 (64 tokens + class token); other input sizes "
                           "resample it (dynamic_img_size)")
def vit_tiny_patch4_32(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    return create("vit_tiny_patch16_224", num_classes, in_chans, img_size=32, patch_size=4, dynamic_img_size=True)


# --------------------------------------------------------------------------------------------- 2021
@register_arch("tf_efficientnetv2_b0", family="EfficientNetV2", generation=2021, source="timm:tf_efficientnetv2_b0",
               aliases=("efficientnetv2",),
               description="timm EfficientNetV2-B0 (5.9M params) with a stride-1 stem convolution")
def tf_efficientnetv2_b0(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("tf_efficientnetv2_b0", num_classes, in_chans)
    _unstride(model.conv_stem)
    return model


# --------------------------------------------------------------------------------------------- 2022
@register_arch("convnext_atto", family="ConvNeXt", generation=2022, source="timm:convnext_atto",
               aliases=("convnext",),
               description="timm ConvNeXt-Atto (3.4M params) with a 2x2 stride-2 patchify stem")
def convnext_atto(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("convnext_atto", num_classes, in_chans)
    width = model.stem[0].out_channels
    model.stem[0] = nn.Conv2d(in_chans, width, kernel_size=2, stride=2)
    return model


# --------------------------------------------------------------------------------------------- 2023
@register_arch("convnextv2_atto", family="ConvNeXt-V2", generation=2023, source="timm:convnextv2_atto",
               aliases=("convnextv2",),
               description="timm ConvNeXt-V2-Atto (3.4M params) with a 2x2 stride-2 patchify stem")
def convnextv2_atto(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("convnextv2_atto", num_classes, in_chans)
    width = model.stem[0].out_channels
    model.stem[0] = nn.Conv2d(in_chans, width, kernel_size=2, stride=2)
    return model


@register_arch("fastvit_t8", family="FastViT", generation=2023, source="timm:fastvit_t8", aliases=("fastvit",),
               description="timm FastViT-T8 (3.3M params) whose first stem block runs at stride 1: the stem "
                           "downsamples 2x, not 4x")
def fastvit_t8(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("fastvit_t8", num_classes, in_chans)
    old = model.stem[0]
    if old.stride != 2 or old.reparam_conv is not None:
        raise ValueError("unexpected FastViT stem")
    # The same train-time MobileOne block (3x3 branch + 1x1 scale branch) at stride 1.
    model.stem[0] = fastvit.MobileOneBlock(old.in_chs, old.out_chs, kernel_size=old.kernel_size, stride=1,
                                           use_scale_branch=old.conv_scale is not None, act_layer=type(old.act))
    return model


@register_arch("efficientvit_b0", family="EfficientViT", generation=2023, source="timm:efficientvit_b0",
               aliases=("efficientvit",),
               description="timm EfficientViT-B0 (MIT; 2.1M params) with a stride-1 stem convolution")
def efficientvit_b0(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("efficientvit_b0", num_classes, in_chans)
    _unstride(model.stem.in_conv.conv)
    return model


# --------------------------------------------------------------------------------------------- 2024
@register_arch("mobilenetv4_conv_small", family="MobileNetV4", generation=2024, source="timm:mobilenetv4_conv_small",
               aliases=("mobilenetv4",),
               description="timm MobileNetV4-Conv-Small (2.5M params) with a stride-1 stem convolution")
def mobilenetv4_conv_small(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
    model = create("mobilenetv4_conv_small", num_classes, in_chans)
    _unstride(model.conv_stem)
    return model
