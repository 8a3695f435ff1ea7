"""Architecture registry: names, sizes, 32x32 adaptations, reference-checkpoint layout."""
import pytest
import torch
from torch import nn

from crt_bench.core.errors import CrtBenchError
from crt_bench.models.build import NormalizeLayer, build_model, count_parameters
from crt_bench.models.registry import get_arch, list_archs

REQUIRED = ("resnet20", "resnet110", "resnet18", "convnext_atto")


def make(name: str, in_chans: int = 3) -> nn.Sequential:
    return build_model(name, num_classes=10, in_chans=in_chans, mean=[0.5] * in_chans, std=[0.25] * in_chans)


def test_required_entries_have_metadata():
    names = {s.name for s in list_archs()}
    assert set(REQUIRED) <= names
    for name in REQUIRED:
        spec = get_arch(name)
        assert spec.family and spec.generation >= 2015 and spec.source
    assert get_arch("resnet20").source == "in-project"
    assert get_arch("convnext_atto").source.startswith("timm:")
    gens = [s.generation for s in list_archs()]
    assert gens == sorted(gens), "list_archs is in release order"


def test_short_alias_resolves():
    assert get_arch("convnext").name == "convnext_atto"


def test_unknown_name_lists_valid_names():
    with pytest.raises(CrtBenchError) as info:
        get_arch("resnet21")
    assert "resnet21" in str(info.value) and "resnet110" in str(info.value) and "convnext_atto" in str(info.value)


@pytest.mark.parametrize("name,low,high", [("resnet20", 0.26e6, 0.28e6), ("resnet110", 1.70e6, 1.75e6)])
def test_cifar_resnet_sizes_match_the_papers(name, low, high):
    assert low <= count_parameters(make(name)) <= high


@pytest.mark.parametrize("name", REQUIRED)
@pytest.mark.parametrize("in_chans,size", [(3, 32), (1, 28)])
def test_forward_and_training_step(name, in_chans, size):
    torch.manual_seed(0)
    model = make(name, in_chans)
    x = torch.rand(4, in_chans, size, size)
    y = torch.tensor([0, 1, 2, 3])
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model(x).shape == (4, 10)


def _feature_size_after_stem(name: str) -> int:
    """Spatial size entering the first stage, measured with a hook."""
    model = make(name)[1]
    first_stage = {"resnet18": lambda m: m.layer1, "convnext_atto": lambda m: m.stages[0]}[name](model)
    seen = {}

    def hook(module, inputs, output):
        seen["hw"] = inputs[0].shape[-1]

    first_stage.register_forward_hook(hook)
    model(torch.rand(2, 3, 32, 32))
    return seen["hw"]


def test_timm_stems_keep_spatial_resolution():
    # ImageNet stems would leave 8x8 maps at the first stage; the CIFAR adaptations keep more.
    assert _feature_size_after_stem("resnet18") == 32
    assert _feature_size_after_stem("convnext_atto") == 16


def test_normalize_layer_is_first_and_exact():
    model = make("resnet20")
    assert isinstance(model[0], NormalizeLayer)
    x = torch.rand(2, 3, 4, 4)
    assert torch.allclose(model[0](x), (x - 0.5) / 0.25)


def test_state_dict_uses_reference_layout():
    # Sequential(NormalizeLayer, net) with the reference CIFAR ResNet's module names, so published
    # ResNet-110 checkpoints (keys prefixed "1.") map onto this model key for key.
    keys = set(make("resnet110").state_dict())
    for key in ("1.conv1.weight", "1.bn1.running_mean", "1.layer1.0.conv1.weight", "1.layer2.0.downsample.0.weight",
                "1.layer3.17.bn2.running_var", "1.fc.weight", "1.fc.bias"):
        assert key in keys
    assert sum(k.endswith("conv2.weight") for k in keys) == 54  # 18 blocks x 3 stages


def test_mismatched_normalization_channels_fail():
    with pytest.raises(CrtBenchError):
        build_model("resnet20", num_classes=10, in_chans=1, mean=[0.5] * 3, std=[0.5] * 3)
