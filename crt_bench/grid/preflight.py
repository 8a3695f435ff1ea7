"""Checks made before a grid submits its first job: the data, the device and the results folder.

A grid (``crt-bench reproduce``, ``crt-bench sweep``) runs for minutes to GPU-days. Whatever would make
every job fail (no dataset, no GPU where one was asked for, a results folder that is a file, read-only
or full) is found here in seconds and reported as one :class:`CrtBenchError` that says what to do,
instead of after the first job, or after hours.

``ensure_dataset`` also *obtains* a missing dataset where it can, in this order: the files already on
disk (``--data-dir``, Debian's package folder, the download cache); for Fashion-MNIST, Debian's
``dataset-fashion-mnist`` package through apt-get when running as root on a machine that has apt;
torchvision's download when online. Only when all of these fail is the user asked to act.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from crt_bench.core.errors import CrtBenchError, one_line
from crt_bench.core.provenance import device_model, device_name, pick_device
from crt_bench.data.catalog import dataset_info
from crt_bench.data.datasets import load_split
from crt_bench.store.checks import check_results_dir
from crt_bench.store.locks import check_locks

DEBIAN_PACKAGES = {"fashion-mnist": "dataset-fashion-mnist"}


@dataclass
class Preflight:
    """What was checked, one line each, for the banner."""

    lines: list[str] = field(default_factory=list)
    device: str | None = None  # the device announced (crt_bench.core.provenance.device_model): every job's

    def note(self, line: str) -> None:
        self.lines.append(line)


def check_device(device: str = "auto") -> str:

    return f"device: {device_name(pick_device(device))}"


def _apt_install(package: str) -> str | None:
    """Install a Debian package when we are root and apt-get exists; None on success, else why not."""
    if os.name != "posix" or os.geteuid() != 0:
        return "not root, so apt-get was not tried"
    if shutil.which("apt-get") is None:
        return "no apt-get on this machine"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", package]
    try:
        if subprocess.run(install, env=env, capture_output=True, timeout=600).returncode == 0:
            return None
        subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True, timeout=600)
        done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"apt-get failed: {err}"
    if done.returncode == 0:
        return None
    last = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()]
    return f"apt-get install {package} failed: {last[-1] if last else f'exit {done.returncode}'}"


def ensure_dataset(name: str, data_dir: str | Path | None = None, *, install: bool = True,
                   download: bool = True) -> str:
    """Make sure both splits of ``name`` load; obtain them if they are missing (see the module docstring)."""

    info = dataset_info(name)
    if info.name == "synthetic":
        return "data: synthetic (generated)"

    def loads(allow_download: bool) -> CrtBenchError | None:
        try:
            for split in ("train", "test"):
                load_split(info.name, split, data_dir=data_dir, download=allow_download, limit=1)
        except CrtBenchError as err:
            return err
        return None

    problem = loads(False)
    if problem is None:
        return f"data: {info.name} found"
    apt_note = ""
    package = DEBIAN_PACKAGES.get(info.name)
    if package and install and data_dir is None:
        why_not = _apt_install(package)
        if why_not is None and loads(False) is None:
            return f"data: {info.name} installed from Debian's {package} package"
        apt_note = f" ({why_not})" if why_not else ""
    if download:
        problem = loads(True)
        if problem is None:
            return f"data: {info.name} downloaded by torchvision"
    ways = []
    if package:
        ways.append(f"as root, `apt-get install {package}` (Debian/Ubuntu){apt_note}")
    ways.append("connect to the internet so that torchvision downloads it")
    ways.append("pass --data-dir DIR holding the files" + (" (the standard cifar-10-batches-py/ folder)"
                                                           if info.name == "cifar10" else
                                                           " (the four IDX files, .gz or not)"))
    raise CrtBenchError(f"the {info.name} dataset is needed and could not be obtained. Do one of: "
                        + "; ".join(f"({i}) {w}" for i, w in enumerate(ways, 1))
                        + f". Details: {one_line(problem)}")


def preflight(*, datasets: set[str], results: str | Path, data_dir: str | Path | None = None,
              device: str = "auto", install_data: bool = True) -> Preflight:
    """Every check a grid needs before its first job; raises the first failure as a CrtBenchError."""
    report = Preflight()
    report.note(check_results_dir(results))
    report.note(check_locks(results))
    report.note(check_device(device))
    report.device = device_model(pick_device(device))
    for name in sorted(datasets):
        report.note(ensure_dataset(name, data_dir, install=install_data))
    return report
