"""Teachers from any source: checkpoints in the format the randomized-smoothing repositories publish."""
from pathlib import Path

import pytest
import torch
from torch import nn

from crt_bench.core.constants import CIFAR10_MEAN, CIFAR10_STD
from crt_bench.core.errors import CrtBenchError
from crt_bench.models.build import build_model
from crt_bench.models.files import load_model
from crt_bench.store.store import ResultsStore
from crt_bench.train.resolve import resolve_run_config
from crt_bench.train.trainer import train_run


def trained_like_net(arch: str = "resnet20", seed: int = 0) -> nn.Module:
    """A CIFAR ResNet with non-trivial weights and BN statistics (as a released model would have)."""
    torch.manual_seed(seed)
    net = build_model(arch, num_classes=10, in_chans=3, mean=[0.0] * 3, std=[1.0] * 3)[1]
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return net.eval()


def write_reference(path: Path, net: nn.Module, *, prefix: str = "1.", arch: str = "cifar_resnet20",
                    key: str = "state_dict") -> Path:
    """The layout of Cohen/Salman/Jeong checkpoints: {'arch', 'state_dict' of Sequential(layer, net), ...}."""
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    state = {prefix + k: v for k, v in net.state_dict().items()}
    torch.save({"epoch": 150, "arch": arch, key: state, "optimizer": opt.state_dict()}, path)
    return path


def normalized(x: torch.Tensor, mean, std) -> torch.Tensor:
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


@pytest.fixture
def images():
    return torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def test_cohen_layout_loads_with_cifar_normalization(tmp_path, images):
    net = trained_like_net()
    loaded = load_model(str(write_reference(tmp_path / "checkpoint.pth.tar", net)), tmp_path)
    assert loaded.meta["arch"] == "resnet20" and loaded.meta["format"] == "reference"
    assert loaded.meta["num_classes"] == 10 and loaded.meta["input_layer"] == "normalize"
    with torch.no_grad():
        assert torch.allclose(loaded.model(images), net(normalized(images, CIFAR10_MEAN, CIFAR10_STD)), atol=1e-5)


def test_salman_input_center_layer(tmp_path, images):
    net = trained_like_net()
    path = write_reference(tmp_path / "salman.pth.tar", net)
    loaded = load_model(str(path), tmp_path, input_layer="center")
    with torch.no_grad():
        assert torch.allclose(loaded.model(images), net(normalized(images, CIFAR10_MEAN, (1.0, 1.0, 1.0))), atol=1e-5)


def test_dataparallel_prefix_and_depth_read_from_weights(tmp_path, images):
    net = trained_like_net("resnet110")
    path = write_reference(tmp_path / "dp.pth.tar", net, prefix="1.module.", arch="something_else")
    loaded = load_model(str(path), tmp_path)
    assert loaded.meta["arch"] == "resnet110" and loaded.meta["reference_arch"] == "something_else"
    with torch.no_grad():
        assert torch.allclose(loaded.model(images), net(normalized(images, CIFAR10_MEAN, CIFAR10_STD)), atol=1e-4)


def test_bare_net_without_input_layer_takes_raw_pixels(tmp_path, images):
    # MACER's model has no normalization layer: raw [0, 1] input.
    net = trained_like_net()
    loaded = load_model(str(write_reference(tmp_path / "macer.pth", net, prefix="", key="net")), tmp_path)
    assert loaded.meta["input_layer"] == "none"
    with torch.no_grad():
        assert torch.allclose(loaded.model(images), net(images), atol=1e-5)


def test_unknown_formats_are_clear_errors(tmp_path):
    bad = tmp_path / "other.pt"
    torch.save({"weights": {"a": torch.zeros(2)}}, bad)
    with pytest.raises(CrtBenchError, match="not in a format crt-bench reads"):
        load_model(str(bad), tmp_path)
    vgg = tmp_path / "vgg.pt"
    torch.save({"state_dict": {"1.conv1.weight": torch.zeros(16, 3, 3, 3), "1.fc.weight": torch.zeros(10, 64)}}, vgg)
    with pytest.raises(CrtBenchError, match="not a CIFAR ResNet"):
        load_model(str(vgg), tmp_path)
    with pytest.raises(CrtBenchError, match="input layer"):
        load_model(str(write_reference(tmp_path / "r.pt", trained_like_net())), tmp_path, input_layer="zscore")


def test_crt_student_trains_from_a_reference_teacher(tmp_path):
    path = write_reference(tmp_path / "smoothmix_resnet20.pth.tar", trained_like_net())
    store = ResultsStore(tmp_path / "results")
    cfg = resolve_run_config("crt", "tiny_cnn", profile="smoke", epochs=1, train_limit=128, device="cpu",
                             teacher=str(path))
    run_id = train_run(cfg, store, progress=False)
    run = store.get_run(run_id)
    assert run["status"] == "finished" and run["teacher_arch"] == "resnet20" and run["teacher"] == str(path)


def test_certifying_a_reference_checkpoint_needs_sigma(tmp_path):
    from crt_bench.certify.resumable import certify_run
    from crt_bench.config.certify import CertifyConfig

    path = write_reference(tmp_path / "ref.pth.tar", trained_like_net())
    store = ResultsStore(tmp_path / "results")
    with pytest.raises(CrtBenchError, match="pass --sigma"):
        certify_run(str(path), store, CertifyConfig(n0=10, n=20, batch=20, subset="range:0:2"), device="cpu",
                    progress=False)
    assert store.read("certify").empty
