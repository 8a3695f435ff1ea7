"""An architecture is one function with ``@register_arch`` on it: a toy architecture written as one file,
imported from its path, is listed, builds, trains a smoke run, and imports without torch; the built-in builders
are registered on their own functions."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from test_method_plugin import ROOT, import_file

from crt_bench.models import registry
from crt_bench.models.build import build_model
from crt_bench.models.registry import generations, get_arch, list_archs, register_arch
from crt_bench.store.store import ResultsStore
from crt_bench.train.resolve import resolve_run_config
from crt_bench.train.trainer import train_run

TOY = textwrap.dedent('''
    from __future__ import annotations

    from typing import TYPE_CHECKING

    from crt_bench.core.lazy import lazy_module
    from crt_bench.models.registry import register_arch

    if TYPE_CHECKING:
        from torch import nn
    else:
        nn = lazy_module("torch.nn")


    @register_arch("toy_mlp", family="test", generation=2012, source="in-project", aliases=("toy",),
                   description="flatten and one linear layer")
    def toy_mlp(num_classes: int = 10, in_chans: int = 3) -> nn.Module:
        return nn.Sequential(nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(in_chans * 16, num_classes))
''')


@pytest.fixture
def own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test registers into copies of the registry's tables: the toy is gone afterwards."""
    monkeypatch.setattr(registry, "_ARCHS", dict(registry._ARCHS))
    monkeypatch.setattr(registry, "_ALIASES", dict(registry._ALIASES))


def test_an_architecture_in_one_file_is_listed_builds_and_trains(tmp_path: Path, own_registry: None,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "toy_arch.py"
    path.write_text(TOY)
    module = import_file(path, "toy_arch", monkeypatch)

    spec = get_arch("toy")  # by its alias
    assert spec.name == "toy_mlp" and spec.builder is module.toy_mlp  # the function itself, returned unchanged
    assert "toy_mlp" in [s.name for s in list_archs()] and spec not in generations()  # a test model
    net = build_model("toy_mlp", num_classes=7, in_chans=1, mean=[0.5], std=[0.25])
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 7)

    cfg = resolve_run_config("gaussian", "toy_mlp", profile="smoke", epochs=1, train_limit=128, test_limit=32,
                             device="cpu", seed=0)
    store = ResultsStore(tmp_path / "results")
    run_id = train_run(cfg, store, progress=False)
    assert store.get_run(run_id)["arch"] == "toy_mlp"
    assert store.read("epochs", where={"run_id": run_id})["epoch"].tolist() == [1]


def test_an_architecture_file_and_the_catalogue_import_without_torch(tmp_path: Path) -> None:
    path = tmp_path / "toy_arch.py"
    path.write_text(TOY)
    code = (f"import importlib.util, json, sys\n"
            f"from crt_bench.models.registry import get_arch, list_archs\n"
            f"s = importlib.util.spec_from_file_location('toy_arch', {str(path)!r})\n"
            f"m = sys.modules['toy_arch'] = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
            f"assert get_arch('toy_mlp').builder is m.toy_mlp and len(list_archs()) > 20\n"
            f"print(json.dumps(sorted(k for k in ('torch', 'timm', 'torchvision') if k in sys.modules)))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == []


def test_builtin_builders_are_registered_on_their_own_functions() -> None:
    from crt_bench.models import imagenet_models, in_project, timm_models

    modules = {m.__name__: m for m in (imagenet_models, in_project, timm_models)}
    for spec in list_archs():
        fn = spec.builder
        assert getattr(modules[fn.__module__], fn.__name__) is fn, spec.name  # a module-level function
        assert fn.__name__ == spec.name, spec.name  # each named for its architecture
    # Release order within a year is definition order in timm_models (Figure 1's sequence).
    in_2023 = [s.name for s in generations() if s.generation == 2023]
    assert in_2023 == ["convnextv2_atto", "fastvit_t8", "efficientvit_b0"]


def test_names_and_aliases_are_registered_once(own_registry: None) -> None:
    def net(num_classes: int = 10, in_chans: int = 3):
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="registered twice"):
        register_arch("resnet20", family="x", generation=2015, source="in-project")(net)
    with pytest.raises(ValueError, match="alias 'convnext'"):
        register_arch("fresh", family="x", generation=2015, source="in-project", aliases=("convnext",))(net)
    with pytest.raises(ValueError, match="must be a function"):
        register_arch("fresh", family="x", generation=2015, source="in-project")(42)
    assert get_arch("resnet20").builder.__name__ == "resnet20"  # the first registration stands
    assert "fresh" not in [s.name for s in list_archs()]
