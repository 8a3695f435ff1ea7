"""A method is one file with one decorator: a toy method written to ``tmp_path`` (hyper-parameters and a
``@register_method`` loss), imported from its path, is listed, trains a real smoke run, and imports without
torch; registering a name twice is an error."""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from crt_bench.methods import registry
from crt_bench.methods.registry import Recipe, get_method, list_methods, register_method
from crt_bench.store.store import ResultsStore
from crt_bench.train.resolve import resolve_run_config
from crt_bench.train.trainer import train_run

ROOT = Path(__file__).resolve().parent.parent

TOY = textwrap.dedent('''
    """A toy method: cross-entropy on Gaussian noise, scaled by ``weight``."""
    from __future__ import annotations

    from dataclasses import dataclass
    from typing import TYPE_CHECKING

    from crt_bench.core.lazy import lazy_module
    from crt_bench.methods.common import gaussian_noise
    from crt_bench.methods.registry import Recipe, StepContext, register_method

    if TYPE_CHECKING:
        import torch.nn.functional as F
        from torch import Tensor, nn
    else:
        F = lazy_module("torch.nn.functional")


    @dataclass
    class ToyHParams:
        weight: float = 0.5


    @register_method("toy_plugin", hparams=ToyHParams, reference="a test's toy method",
                     recipe=Recipe(epochs=10, batch_size=64, lr=0.05, milestones=(5,)))
    def toy_loss(model: nn.Module, x: Tensor, y: Tensor, ctx: StepContext) -> Tensor:
        return ctx.hparams.weight * F.cross_entropy(model(gaussian_noise(x, ctx.sigma)), y)
''')


@pytest.fixture
def own_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """The test registers into a copy of the registry: the toy is gone afterwards."""
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))


def import_file(path: Path, name: str, monkeypatch: pytest.MonkeyPatch):
    """Import the file ``path`` as module ``name`` (in ``sys.modules`` until the test ends, as dataclasses need)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


def test_a_method_in_one_file_is_listed_and_trains(tmp_path: Path, own_registry: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "toy_plugin.py"
    path.write_text(TOY)
    module = import_file(path, "toy_plugin", monkeypatch)

    spec = get_method("toy_plugin")
    assert "toy_plugin" in [m.name for m in list_methods()]
    assert spec.loss is module.toy_loss  # the decorator registers the function itself and returns it
    assert spec.hparams is module.ToyHParams and spec.make_hparams({"weight": "2"}).weight == 2.0
    assert spec.recipe.epochs == 10 and not spec.needs_teacher and spec.compose is None

    cfg = resolve_run_config("toy_plugin", "tiny_cnn", profile="smoke", epochs=1, train_limit=128, test_limit=32,
                             device="cpu", seed=0)
    store = ResultsStore(tmp_path / "results")
    run_id = train_run(cfg, store, progress=False)
    epochs = store.read("epochs")
    epochs = epochs[epochs["run_id"] == run_id]
    assert epochs["epoch"].tolist() == [1]
    assert int(epochs["optimizer_steps"].iloc[0]) == 2  # 128 images / batch 64
    assert math.isfinite(float(epochs["loss"].iloc[0]))
    assert store.get_run(run_id)["method"] == "toy_plugin"


def test_a_method_file_imports_without_torch(tmp_path: Path) -> None:
    path = tmp_path / "toy_plugin.py"
    path.write_text(TOY)
    code = (f"import importlib.util, json, sys\n"
            f"s = importlib.util.spec_from_file_location('toy_plugin', {str(path)!r})\n"
            f"m = sys.modules['toy_plugin'] = importlib.util.module_from_spec(s); s.loader.exec_module(m)\n"
            f"from crt_bench.methods.registry import get_method\n"
            f"assert get_method('toy_plugin').loss is m.toy_loss\n"
            f"print(json.dumps('torch' in sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) is False


def test_registering_a_name_twice_is_an_error(tmp_path: Path, own_registry: None,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "toy_plugin.py"
    path.write_text(TOY)
    import_file(path, "toy_plugin", monkeypatch)
    with pytest.raises(ValueError, match="registered twice"):
        import_file(path, "toy_plugin_again", monkeypatch)  # the same file again: the same name
    with pytest.raises(ValueError, match="registered twice"):
        register_method("gaussian", hparams=object, recipe=Recipe(1, 1, 0.1, ()), reference="")
    assert get_method("gaussian").loss.__name__ == "gaussian_loss"  # the first registration stands


def test_the_decorator_goes_on_a_function(own_registry: None) -> None:
    with pytest.raises(ValueError, match="loss function"):
        register_method("not_a_function", hparams=object, recipe=Recipe(1, 1, 0.1, ()), reference="")(42)
    assert "not_a_function" not in [m.name for m in list_methods()]


def test_lazy_module_imports_on_first_attribute_use(monkeypatch: pytest.MonkeyPatch) -> None:
    from crt_bench.core.lazy import lazy_module

    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    colorsys = lazy_module("colorsys")
    assert "colorsys" not in sys.modules  # binding it imports nothing
    assert colorsys.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)
    assert "colorsys" in sys.modules and colorsys.rgb_to_hsv is sys.modules["colorsys"].rgb_to_hsv
