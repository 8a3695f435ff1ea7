"""Re-launching a command under ``torchrun``."""
from __future__ import annotations

import sys

from crt_bench.core.checks import check_count


def torchrun_command(nproc: int, cli_args: list[str], *, nnodes: int = 1) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc_per_node K -m crt_bench.cli ARGS`` (one node)."""
    check_count("--nproc", nproc)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nnodes={nnodes}",
            f"--nproc_per_node={nproc}", "-m", "crt_bench.cli", *cli_args]


def strip_option(args: list[str], name: str) -> list[str]:
    """``args`` without ``name VALUE`` / ``name=VALUE`` (the relaunched command must not relaunch)."""
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
        elif arg == name:
            skip = True
        elif not arg.startswith(name + "="):
            out.append(arg)
    return out
