"""The architecture catalogue: every architecture's name, family, generation, source and builder.

Torch-free: ``crt-bench list archs`` and ``--help`` read it without importing torch, timm or torchvision.
A builder is ``"module:function"``, ``function(num_classes, in_chans) -> nn.Module``, imported when a
model is first built (:attr:`crt_bench.models.registry.ArchSpec.constructor`).

Adding an architecture: a builder function (``cifar_resnet.py``, ``timm_models.py``, ``imagenet_models.py`` or
a new module) and one ``register_arch`` line here. The timm entries are in release order: ``generations()``
keeps registration order within a year.
"""
from __future__ import annotations

from crt_bench.models.registry import register_arch

_CIFAR_RESNET = "crt_bench.models.cifar_resnet:"
_IMAGENET_MODELS = "crt_bench.models.imagenet_models:"
_TIMM_MODELS = "crt_bench.models.timm_models:"

# cifar_resnet.py: the CIFAR ResNets (the teachers) and the test CNN
register_arch("resnet20", family="CIFAR ResNet", generation=2015, source="in-project",
              builder=_CIFAR_RESNET + "resnet20",
              description="CIFAR ResNet-20 (BasicBlock 3x3, 16/32/64), proxy teacher")
register_arch("resnet110", family="CIFAR ResNet", generation=2015, source="in-project",
              builder=_CIFAR_RESNET + "resnet110",
              description="CIFAR ResNet-110 (BasicBlock 18x3, 16/32/64), the papers' base classifier")
register_arch("tiny_cnn", family="test", generation=2012, source="in-project",
              builder=_CIFAR_RESNET + "tiny_cnn",
              description="two-conv CNN for the smoke profile and tests (seconds on a CPU)")

# imagenet_models.py: torchvision at 224x224 (the ImageNet experiment)
register_arch("resnet18_224", family="ResNet (ImageNet)", generation=2015, source="torchvision:resnet18",
              builder=_IMAGENET_MODELS + "resnet18_224",
              input_size=224, description="torchvision ResNet-18, 224x224 ImageNet stem: the paper's ImageNet teacher")
register_arch("resnet50_224", family="ResNet (ImageNet)", generation=2015, source="torchvision:resnet50",
              builder=_IMAGENET_MODELS + "resnet50_224",
              input_size=224, description="torchvision ResNet-50, 224x224 ImageNet stem: the paper's ImageNet student")

# timm_models.py: the generation sequence of Figure 1, in release order
register_arch("resnet18", family="ResNet", generation=2015, source="timm:resnet18", aliases=("resnet",),
              builder=_TIMM_MODELS + "resnet18",
              description="timm ResNet-18 with a 3x3 stride-1 stem and no max-pool (CIFAR stem)")
register_arch("densenet121", family="DenseNet", generation=2016, source="timm:densenet121",
              builder=_TIMM_MODELS + "densenet121",
              aliases=("densenet",),
              description="timm DenseNet-121 (7.0M params) with a 3x3 stride-1 stem and no max-pool (CIFAR stem)")
register_arch("resnext26ts", family="ResNeXt", generation=2017, source="timm:resnext26ts",
              builder=_TIMM_MODELS + "resnext26ts",
              aliases=("resnext",),
              description="timm ResNeXt-26-TS (8.3M params; tiered 3-conv stem, SiLU) with the stem's "
                          "first convolution at stride 1 and no max-pool")
register_arch("dla46_c", family="DLA", generation=2018, source="timm:dla46_c", aliases=("dla",),
              builder=_TIMM_MODELS + "dla46_c",
              description="timm DLA-46-C (1.0M params) with level1 at stride 1: the first tree (level2) "
                          "sees the full 32x32 input; inputs are zero-padded to a multiple of 16 (28 -> 32)")
register_arch("mobilenetv2_100", family="MobileNetV2", generation=2018, source="timm:mobilenetv2_100",
              builder=_TIMM_MODELS + "mobilenetv2_100",
              aliases=("mobilenetv2",),
              description="timm MobileNetV2-1.0 (2.2M params) with a stride-1 stem convolution")
register_arch("mobilenetv3_small_100", family="MobileNetV3", generation=2019,
              builder=_TIMM_MODELS + "mobilenetv3_small_100",
              source="timm:mobilenetv3_small_100", aliases=("mobilenetv3",),
              description="timm MobileNetV3-Small-1.0 (1.5M params) with a stride-1 stem convolution")
register_arch("efficientnet_b0", family="EfficientNet", generation=2019, source="timm:efficientnet_b0",
              builder=_TIMM_MODELS + "efficientnet_b0",
              aliases=("efficientnet",),
              description="timm EfficientNet-B0 (4.0M params) with a stride-1 stem convolution")
register_arch("regnetx_002", family="RegNet", generation=2020, source="timm:regnetx_002",
              builder=_TIMM_MODELS + "regnetx_002",
              aliases=("regnet", "regnetx"),
              description="timm RegNetX-200MF (2.3M params) with a stride-1 stem convolution")
register_arch("vit_tiny_patch4_32", family="ViT", generation=2020, source="timm:vit_tiny_patch16_224",
              builder=_TIMM_MODELS + "vit_tiny_patch4_32",
              aliases=("vit", "vit_tiny"),
              description="timm ViT-Tiny (5.4M params; depth 12, width 192) re-created with 4x4 patches and a "
                          "positional embedding for 32x32 (64 tokens + class token); other input sizes "
                          "resample it (dynamic_img_size)")
register_arch("tf_efficientnetv2_b0", family="EfficientNetV2", generation=2021,
              builder=_TIMM_MODELS + "tf_efficientnetv2_b0",
              source="timm:tf_efficientnetv2_b0", aliases=("efficientnetv2",),
              description="timm EfficientNetV2-B0 (5.9M params) with a stride-1 stem convolution")
register_arch("convnext_atto", family="ConvNeXt", generation=2022, source="timm:convnext_atto",
              builder=_TIMM_MODELS + "convnext_atto",
              aliases=("convnext",),
              description="timm ConvNeXt-Atto (3.4M params) with a 2x2 stride-2 patchify stem")
register_arch("convnextv2_atto", family="ConvNeXt-V2", generation=2023, source="timm:convnextv2_atto",
              builder=_TIMM_MODELS + "convnextv2_atto",
              aliases=("convnextv2",),
              description="timm ConvNeXt-V2-Atto (3.4M params) with a 2x2 stride-2 patchify stem")
register_arch("fastvit_t8", family="FastViT", generation=2023, source="timm:fastvit_t8", aliases=("fastvit",),
              builder=_TIMM_MODELS + "fastvit_t8",
              description="timm FastViT-T8 (3.3M params) whose first stem block runs at stride 1: the stem "
                          "downsamples 2x, not 4x")
register_arch("efficientvit_b0", family="EfficientViT", generation=2023, source="timm:efficientvit_b0",
              builder=_TIMM_MODELS + "efficientvit_b0",
              aliases=("efficientvit",),
              description="timm EfficientViT-B0 (MIT; 2.1M params) with a stride-1 stem convolution")
register_arch("mobilenetv4_conv_small", family="MobileNetV4", generation=2024,
              builder=_TIMM_MODELS + "mobilenetv4_conv_small",
              source="timm:mobilenetv4_conv_small", aliases=("mobilenetv4",),
              description="timm MobileNetV4-Conv-Small (2.5M params) with a stride-1 stem convolution")
