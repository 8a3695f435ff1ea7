"""Model files: what crt-bench writes, and loading a base classifier from a run id or a path.

A crt-bench model file is a plain dict loadable with ``torch.load(..., weights_only=True)``::

    {"format": "crt-bench/1", "arch": str, "num_classes": int, "in_chans": int, "image_size": int,
     "mean": [..], "std": [..], "dataset": str, "sigma": float, "method": str, "run_id": str,
     "state_dict": Sequential(NormalizeLayer, net).state_dict()}

A denoised-smoothing run's file also has ``"denoiser": {depth, width, in_chans, sigma, objective}`` and the
``state_dict`` of ``DenoisedClassifier(denoiser, classifier)`` (:mod:`crt_bench.models.denoiser`): it loads
as classifier(denoiser(x)), a base classifier like any other.

Training checkpoints (``checkpoint.pt``) carry the same keys plus optimizer and RNG state for resume.

Checkpoints published with the randomized-smoothing papers (Cohen et al., Salman et al., Jeong et al.)
load too, so that CRT can use a released SmoothMix or SmoothAdv ResNet-110 as its teacher: a dict with
``arch`` (e.g. ``cifar_resnet110``) and the ``state_dict`` of ``Sequential(InputLayer, net)``, keys
prefixed ``1.`` (``module.`` from DataParallel is stripped). Their input layer holds no tensors, so it
is rebuilt: ``NormalizeLayer`` with the CIFAR-10 mean/std (``input_layer="normalize"``, Cohen and
Jeong) or mean subtraction only (``"center"``, Salman's ``InputCenterLayer``; using the wrong one costs
most of the accuracy, Hadisalman/smoothing-adversarial#1). A bare CIFAR ResNet state dict without
input layer (MACER's, which takes raw [0, 1] pixels) loads with the identity normalisation. The depth
is read off the weights, so the ``arch`` string need not be trusted.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crt_bench.config.choices import INPUT_LAYERS
from crt_bench.core.constants import CIFAR10_MEAN, CIFAR10_STD
from crt_bench.core.errors import CrtBenchError, one_line
from crt_bench.models.build import build_model
from crt_bench.models.denoiser import DenoisedClassifier, DenoiserConfig, DnCNN

FORMAT = "crt-bench/1"
MODEL_FILE = "model.pt"
CHECKPOINT_FILE = "checkpoint.pt"


@dataclass(frozen=True)
class LoadedModel:
    model: nn.Module
    meta: dict[str, Any]  # everything in the file except tensors
    path: Path


def read_torch_file(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with one clear error for a missing or corrupt file."""
    path = Path(path)
    if not path.is_file():
        raise CrtBenchError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  arbitrary bytes fail in arbitrary ways (IndexError, KeyError, ...)
        raise CrtBenchError(f"checkpoint {path} is corrupt or not a torch file ({one_line(err, first=True)})") from None
    if not isinstance(obj, dict):
        raise CrtBenchError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of weights and metadata")
    return obj


def model_metadata(cfg_arch: str, info: Any, *, sigma: float, method: str, run_id: str,
                   model: nn.Module | None = None) -> dict[str, Any]:
    """The metadata of ``model``'s file; a denoised classifier also records its denoiser."""
    meta = {
        "format": FORMAT, "arch": cfg_arch, "num_classes": info.num_classes, "in_chans": info.in_chans,
        "image_size": info.image_size, "mean": list(info.mean), "std": list(info.std), "dataset": info.name,
        "sigma": sigma, "method": method, "run_id": run_id,
    }
    if isinstance(model, DenoisedClassifier):
        meta["denoiser"] = model.denoiser.config.to_meta()
    return meta


def model_from_dict(obj: dict[str, Any], path: Path, input_layer: str = "normalize") -> LoadedModel:
    if obj.get("format") != FORMAT:
        if _reference_state(obj) is not None:
            return reference_model(obj, path, input_layer)
        raise CrtBenchError(
            f"checkpoint {path} is not in a format crt-bench reads (a crt-bench model file with "
            f"format={FORMAT!r}, or a reference-repository checkpoint with a CIFAR ResNet 'state_dict'); "
            f"found keys: {', '.join(sorted(map(str, obj))[:8])}"
        )
    missing = [k for k in ("arch", "num_classes", "in_chans", "mean", "std", "state_dict") if k not in obj]
    if missing:
        raise CrtBenchError(f"checkpoint {path} lacks {', '.join(missing)}")
    model: nn.Module = build_model(obj["arch"], num_classes=obj["num_classes"], in_chans=obj["in_chans"],
                                   mean=obj["mean"], std=obj["std"])
    if "denoiser" in obj:  # a denoised run: classifier(denoiser(x)) (crt_bench.models.denoiser)
        model = DenoisedClassifier(DnCNN(DenoiserConfig.from_meta(obj["denoiser"])), model)
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as err:
        raise CrtBenchError(f"checkpoint {path} does not match architecture {obj['arch']!r}: {str(err)[:300]}") from None
    meta = {k: v for k, v in obj.items() if k not in ("state_dict", "optimizer", "rng")}
    return LoadedModel(model.eval(), meta, path)


def _reference_state(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The CIFAR-ResNet state dict inside a reference checkpoint, ``module.`` stripped; else None."""
    for key in ("state_dict", "net", "model"):
        state = obj.get(key)
        if isinstance(state, dict) and state and all(isinstance(k, str) for k in state):
            state = {k.replace("module.", ""): v for k, v in state.items()}
            if any(k.endswith("conv1.weight") for k in state) and any(k.endswith("fc.weight") for k in state):
                return state
    return None


def reference_model(obj: dict[str, Any], path: Path, input_layer: str = "normalize") -> LoadedModel:
    """Load a checkpoint in the reference repositories' format (see the module docstring)."""
    if input_layer not in INPUT_LAYERS:
        raise CrtBenchError(f"input layer must be one of {', '.join(INPUT_LAYERS)}, got {input_layer!r}")
    state = _reference_state(obj)
    assert state is not None
    wrapped = any(k.startswith("1.") for k in state)
    net_state = {k[2:]: v for k, v in state.items() if k.startswith("1.")} if wrapped else state
    blocks = {int(k.split(".")[1]) for k in net_state if k.startswith("layer1.")}
    if not blocks or "conv1.weight" not in net_state or "fc.weight" not in net_state:
        raise CrtBenchError(f"checkpoint {path} is not a CIFAR ResNet (no conv1/layer1/fc weights); "
                            f"crt-bench reads the reference repositories' cifar_resnet checkpoints")
    depth = 6 * (max(blocks) + 1) + 2
    arch = f"resnet{depth}"
    in_chans = int(net_state["conv1.weight"].shape[1])
    num_classes = int(net_state["fc.weight"].shape[0])
    if not wrapped:
        mean, std = [0.0] * in_chans, [1.0] * in_chans
    elif input_layer == "center":
        mean, std = list(CIFAR10_MEAN), [1.0] * 3
    else:
        mean, std = list(CIFAR10_MEAN), list(CIFAR10_STD)
    if len(mean) != in_chans:
        raise CrtBenchError(f"checkpoint {path} takes {in_chans}-channel input; reference checkpoints are CIFAR-10")
    model = build_model(arch, num_classes=num_classes, in_chans=in_chans, mean=mean, std=std)
    try:
        model[1].load_state_dict(net_state)
    except (RuntimeError, KeyError) as err:
        raise CrtBenchError(f"checkpoint {path} does not match CIFAR {arch} ({one_line(err, first=True)[:200]})") from None
    meta = {"format": "reference", "arch": arch, "reference_arch": str(obj.get("arch", "")),
            "num_classes": num_classes, "in_chans": in_chans, "image_size": 32, "mean": mean, "std": std,
            "dataset": "cifar10", "sigma": None, "method": "reference", "run_id": "",
            "input_layer": input_layer if wrapped else "none"}
    return LoadedModel(model.eval(), meta, path)


def resolve_model_path(source: str, results_root: str | Path) -> Path:
    """A run id names ``RESULTS/runs/<id>/model.pt``; anything else is taken as a file path."""
    run_model = Path(results_root) / "runs" / source / MODEL_FILE
    if run_model.is_file():
        return run_model
    path = Path(source)
    if path.is_dir() and (path / MODEL_FILE).is_file():
        return path / MODEL_FILE
    if path.is_file():
        return path
    if (Path(results_root) / "runs" / source).is_dir():
        raise CrtBenchError(f"run {source!r} has no finished model yet ({run_model} is missing); "
                            f"finish it with `crt-bench run --resume {source}`")
    raise CrtBenchError(f"{source!r} is neither a run id in {results_root} nor a checkpoint file")


def load_model(source: str, results_root: str | Path = "results", input_layer: str = "normalize") -> LoadedModel:
    """A run id, a crt-bench model file or a reference checkpoint, as a model in eval mode."""
    path = resolve_model_path(source, results_root)
    return model_from_dict(read_torch_file(path), path, input_layer)
