"""Model files: what crt-bench writes, and loading a base classifier from a run id or a path.

A crt-bench model file is a plain dict loadable with ``torch.load(..., weights_only=True)``::

    {"format": "crt-bench/1", "arch": str, "num_classes": int, "in_chans": int, "image_size": int,
     "mean": [..], "std": [..], "dataset": str, "sigma": float, "method": str, "run_id": str,
     "state_dict": Sequential(NormalizeLayer, net).state_dict()}

Training checkpoints (``checkpoint.pt``) carry the same keys plus optimizer and RNG state for resume.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from crt_bench.archs import build_model
from crt_bench.errors import CrtBenchError

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
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CrtBenchError(f"checkpoint {path} is corrupt or not a torch file ({first})") from None
    if not isinstance(obj, dict):
        raise CrtBenchError(f"checkpoint {path} holds a {type(obj).__name__}, not a dict of weights and metadata")
    return obj


def model_metadata(cfg_arch: str, info: Any, *, sigma: float, method: str, run_id: str) -> dict[str, Any]:
    return {
        "format": FORMAT, "arch": cfg_arch, "num_classes": info.num_classes, "in_chans": info.in_chans,
        "image_size": info.image_size, "mean": list(info.mean), "std": list(info.std), "dataset": info.name,
        "sigma": sigma, "method": method, "run_id": run_id,
    }


def model_from_dict(obj: dict[str, Any], path: Path) -> LoadedModel:
    if obj.get("format") != FORMAT:
        raise CrtBenchError(
            f"checkpoint {path} is not in a format crt-bench reads (expected a crt-bench model file with "
            f"format={FORMAT!r}; found keys: {', '.join(sorted(map(str, obj))[:8])})"
        )
    missing = [k for k in ("arch", "num_classes", "in_chans", "mean", "std", "state_dict") if k not in obj]
    if missing:
        raise CrtBenchError(f"checkpoint {path} lacks {', '.join(missing)}")
    model = build_model(obj["arch"], num_classes=obj["num_classes"], in_chans=obj["in_chans"],
                        mean=obj["mean"], std=obj["std"])
    try:
        model.load_state_dict(obj["state_dict"])
    except RuntimeError as err:
        raise CrtBenchError(f"checkpoint {path} does not match architecture {obj['arch']!r}: {str(err)[:300]}") from None
    meta = {k: v for k, v in obj.items() if k not in ("state_dict", "optimizer", "rng")}
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


def load_model(source: str, results_root: str | Path = "results") -> LoadedModel:
    path = resolve_model_path(source, results_root)
    return model_from_dict(read_torch_file(path), path)
