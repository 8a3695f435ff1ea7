"""Options shared by the commands, and checks of their values."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from crt_bench.config.profiles import PROFILES
from crt_bench.core.errors import CrtBenchError

ResultsOpt = Annotated[Path, typer.Option("--results", help="results directory (parquet store)")]
DataDirOpt = Annotated[Optional[str], typer.Option("--data-dir", help="where the dataset files are")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")]
PROFILE_HELP = " | ".join(PROFILES)  # crt-bench list profiles


def check_inputs(*, profile: str | None = None, device: str | None = None, tf32_flag: str | None = None) -> None:
    """An unknown profile, an unusable device, or TF32 (``tf32_flag``: the flag that asked for it) on a device
    that cannot honour it: one line and exit 2 before anything is printed or written."""
    from crt_bench.config.profiles import get_profile
    from crt_bench.core.provenance import pick_device
    from crt_bench.core.tf32 import check_tf32

    if profile is not None:
        get_profile(profile)
    if device is not None:
        chosen = pick_device(device)
        if tf32_flag is not None:
            check_tf32(True, chosen, tf32_flag)


def parse_sets(pairs: list[str]) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CrtBenchError(f"--set takes KEY=VALUE, got {pair!r}")
        parsed[key.strip()] = value.strip()
    return parsed
