"""Consoles of the CLI and the banner printed before a command runs."""
from __future__ import annotations

import sys

from rich.console import Console

# Tables are wide: outside a terminal (pipes, CI logs) do not squeeze them into 80 columns.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
out = Console(width=None if sys.stdout.isatty() else 200)


def banner(profile: str, what: str, *, describe_profile: bool = True, device: str = "auto") -> None:
    """What is about to run. ``describe_profile=False`` when ``what`` already says what the run really is
    (flags may have changed the profile's dataset, images or epochs: its blurb would then mislead)."""
    from crt_bench.config.profiles import get_profile
    from crt_bench.core.provenance import device_name, pick_device

    prof = get_profile(profile)
    err.rule(f"[bold]crt-bench[/] profile [bold cyan]{prof.name}[/]")
    lines = [prof.description, f"epochs: {prof.epoch_scale:g} x each method's recipe epochs and lr milestones"]
    err.print("\n".join([*(lines if describe_profile else []), f"device: {device_name(pick_device(device))}", what]),
              markup=False, highlight=False)
    err.rule()
