"""The generation registry (Figure 1): timm families in release order, adapted to 32x32 inputs."""
import pytest
import torch
from torch import nn

from crt_bench.core.errors import CrtBenchError
from crt_bench.models.build import build_model, count_parameters
from crt_bench.models.registry import generations, get_arch, is_generation, list_archs
from crt_bench.models.stats import arch_stats

GENERATION_NAMES = [s.name for s in generations()]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # Batch-2 models gain nothing from a second thread, and on a shared 2-core machine a busy second
    # core makes two-thread kernels orders of magnitude slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make(name: str, in_chans: int = 3) -> nn.Sequential:
    return build_model(name, num_classes=10, in_chans=in_chans, mean=[0.5] * in_chans, std=[0.25] * in_chans)


def test_sequence_is_in_release_order_and_covers_the_families():
    specs = generations()
    years = [s.generation for s in specs]
    assert years == sorted(years)
    families = [s.family for s in specs]
    assert len(set(families)) == len(families) >= 12, "one entry per family"
    assert len({s.family for s in specs if s.generation > 2022}) >= 2
    for family in ("ResNet", "DenseNet", "ResNeXt", "DLA", "MobileNetV2", "MobileNetV3", "EfficientNet",
                   "RegNet", "ViT", "ConvNeXt"):
        assert family in families
    assert all(s.source.startswith("timm:") for s in specs)
    assert {"resnet18", "convnext_atto"} <= set(GENERATION_NAMES)


def test_teachers_and_test_model_are_not_generations():
    for name in ("tiny_cnn", "resnet20", "resnet110"):
        assert name not in GENERATION_NAMES and not is_generation(get_arch(name))
    assert set(GENERATION_NAMES) == {s.name for s in list_archs() if is_generation(s)}


def test_short_and_timm_names_resolve():
    for spec in generations():
        assert spec.aliases, f"{spec.name} has no short name"
        for alias in spec.aliases:
            assert get_arch(alias) is spec
        timm_name = spec.source.removeprefix("timm:")
        if timm_name in {s.name for s in list_archs()} or timm_name in spec.aliases:
            assert get_arch(timm_name) is spec
    for short, name in [("convnext", "convnext_atto"), ("densenet", "densenet121"), ("vit", "vit_tiny_patch4_32"),
                        ("mobilenetv4", "mobilenetv4_conv_small"), ("fastvit", "fastvit_t8")]:
        assert get_arch(short).name == name


@pytest.mark.parametrize("name", GENERATION_NAMES)
@pytest.mark.parametrize("in_chans,size", [(3, 32), (1, 28)])
def test_forward_and_training_step(name, in_chans, size):
    torch.manual_seed(0)
    model = make(name, in_chans)
    x = torch.rand(2, in_chans, size, size)
    out = model(x)
    assert out.shape == (2, 10)
    nn.functional.cross_entropy(out, torch.tensor([0, 1])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", GENERATION_NAMES)
def test_final_feature_map_is_not_collapsed(name):
    # With ImageNet stems a 32x32 input reaches the last stage as a 1x1 map (32x downsampling).
    net = make(name)[1].eval()
    with torch.no_grad():
        features = net.forward_features(torch.rand(2, 3, 32, 32))
    if features.ndim == 4:
        assert min(features.shape[-2:]) >= 2
    else:  # tokens (ViT): 8x8 patches + class token
        assert features.shape[1] == 65


def _input_size_of(name: str, module_of, size: int = 32, in_chans: int = 3) -> tuple[int, ...]:
    net = make(name, in_chans)[1]
    seen = {}

    def hook(module, inputs, output):
        seen.setdefault("shape", tuple(inputs[0].shape))

    module_of(net).register_forward_hook(hook)
    with torch.no_grad():
        net.eval()(torch.rand(2, in_chans, size, size))
    return tuple(seen["shape"])


@pytest.mark.parametrize("name,first_stage,expected", [
    ("resnet18", lambda m: m.layer1, 32),
    ("densenet121", lambda m: m.features.denseblock1, 32),
    ("resnext26ts", lambda m: m.stages[0], 32),
    ("dla46_c", lambda m: m.level2, 32),
    ("efficientnet_b0", lambda m: m.blocks[0], 32),
    ("regnetx_002", lambda m: m.s1, 32),
    ("mobilenetv4_conv_small", lambda m: m.blocks[0], 32),
    ("convnextv2_atto", lambda m: m.stages[0], 16),
    ("fastvit_t8", lambda m: m.stages[0], 16),
])
def test_first_stage_is_not_downsampled_4x(name, first_stage, expected):
    # ImageNet stems would hand the first stage an 8x8 map (16x16 for these MobileNet-style stems).
    assert _input_size_of(name, first_stage)[-2:] == (expected, expected)


def test_vit_uses_4x4_patches_sized_for_32x32():
    net = make("vit")[1]
    assert net.patch_embed.proj.kernel_size == (4, 4) and net.pos_embed.shape[1] == 8 * 8 + 1
    tokens = _input_size_of("vit", lambda m: m.blocks[0])
    assert tokens[1] == (32 // 4) ** 2 + 1  # + class token
    tokens = _input_size_of("vit", lambda m: m.blocks[0], size=28, in_chans=1)
    assert tokens[1] == (28 // 4) ** 2 + 1  # positional embedding resampled to 7x7


def test_dla_pads_28x28_to_a_multiple_of_16():
    assert _input_size_of("dla46_c", lambda m: m.level2, size=28, in_chans=1)[-2:] == (32, 32)


@pytest.mark.parametrize("name", GENERATION_NAMES + ["resnet20", "resnet110"])
def test_arch_stats_counts_parameters_and_flops(name):
    stats = arch_stats(name)
    assert isinstance(stats["params"], int) and stats["params"] == count_parameters(make(name))
    assert stats["flops_per_image"] > 0
    small = arch_stats(name, in_chans=1, image_size=28)
    assert 0 < small["flops_per_image"] < stats["flops_per_image"]
    assert arch_stats(name, num_classes=100)["params"] > stats["params"]


@pytest.mark.parametrize("name,macs", [("resnet20", 41e6), ("resnet110", 253e6)])
def test_cifar_resnet_flops_match_the_known_mac_counts(name, macs):
    # The counter counts 2 FLOPs per multiply-accumulate.
    assert 0.95 * 2 * macs <= arch_stats(name)["flops_per_image"] <= 1.05 * 2 * macs


def test_attention_is_counted():
    # ViT-Tiny on 65 tokens: 12 blocks x (linears 2*65*12*192^2 + attention 2*2*65^2*192) + patchify + head.
    linear = 12 * 2 * 65 * 12 * 192**2
    attention = 12 * 2 * 2 * 65**2 * 192
    assert arch_stats("vit")["flops_per_image"] >= linear + attention


def test_arch_stats_rejects_unknown_names_listing_the_valid_ones():
    with pytest.raises(CrtBenchError) as info:
        arch_stats("resnet21")
    message = str(info.value)
    assert "resnet21" in message and "densenet121" in message and "mobilenetv4_conv_small" in message
