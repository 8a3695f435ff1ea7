"""Where a result came from: device, library versions and the git commit, recorded with every run."""
from __future__ import annotations

import os
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

import torch

from crt_bench.core.errors import CrtBenchError


@lru_cache(maxsize=1)
def git_commit() -> str:
    """The commit of the crt-bench checkout (``+dirty`` with uncommitted changes), or ``unknown``."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def pick_device(name: str = "auto") -> torch.device:
    """``auto`` (a GPU when one is visible), ``cpu``, ``cuda`` or ``cuda:N``; one clear error for any other."""

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise CrtBenchError(f"unknown --device {name!r}; valid: auto, cpu, cuda, cuda:N") from None
    if device.type not in ("cpu", "cuda"):
        raise CrtBenchError(f"--device {name} is not supported; valid: auto, cpu, cuda, cuda:N")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CrtBenchError(f"--device {name} was asked for but no CUDA GPU is visible (torch {torch.__version__}, "
                            f"CUDA build {torch.version.cuda or 'none'}): use --device cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CrtBenchError(f"--device {name}: this machine has {torch.cuda.device_count()} visible GPU(s), "
                            f"cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def device_model(device: torch.device) -> str:
    """What a grid's preflight announces and each of its jobs must run on: the GPU's name, or ``cpu``."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def physical_gpu(device: torch.device, environ: dict[str, str] | None = None) -> str:
    """Which of the machine's GPUs ``device`` is: its entry of CUDA_VISIBLE_DEVICES (an index or a UUID);
    ``""`` on the CPU. A grid's jobs each see GPUs of their own (crt_bench.grid.gpus), all as ``cuda:0..``."""
    if device.type != "cuda":
        return ""
    index = torch.cuda.current_device() if device.index is None else device.index
    visible = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    names = [name.strip() for name in visible.split(",") if name.strip()] if visible is not None else []
    return names[index] if index < len(names) else str(index)


def environment(device: torch.device) -> dict[str, str | int]:
    return {
        "device": device_name(device),
        "gpu": physical_gpu(device),
        "device_count": torch.cuda.device_count() if device.type == "cuda" else 1,
        "torch": torch.__version__,
        "cuda": torch.version.cuda or "none",
        "python": platform.python_version(),
        "host": socket.gethostname(),
        "git_commit": git_commit(),
    }


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work so that wall-clock times mean what they say."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
