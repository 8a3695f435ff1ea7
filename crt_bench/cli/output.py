"""What the CLI prints: command output on stdout (``out``), logs on stderr (``err``, through logging),
JSON records, and the banner printed before a command runs."""
from __future__ import annotations

import json
import logging
import math
from typing import Any, Iterable, Mapping

from rich.console import RenderableType
from rich.text import Text

from crt_bench.core.console import stderr_console, stdout_console

log = logging.getLogger("crt_bench.cli")
out = stdout_console()
err = stderr_console()


def info(renderable: RenderableType) -> None:
    """A table or block of text on stderr, at INFO (``-q`` hides it)."""
    if log.isEnabledFor(logging.INFO):
        err.print(renderable, soft_wrap=isinstance(renderable, (str, Text)))


def _plain(value: Any) -> Any:
    """JSON-able: NaN/inf -> null, numpy scalars -> Python numbers, mappings and sequences recursively, the rest
    -> str."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item"):  # a numpy scalar
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def print_json(records: Iterable[Mapping[str, Any]]) -> None:
    """``--json``: the rows of what the command would show as a table, one JSON list on stdout."""
    rows = [_plain(r) for r in records]
    print(json.dumps(rows, indent=1))


def banner(profile: str, what: str, *, describe_profile: bool = True, device: str = "auto") -> None:
    """What is about to run (INFO, on stderr). ``describe_profile=False`` when ``what`` already says what the
    run really is (flags may have changed the profile's dataset, images or epochs: its blurb would mislead)."""
    from crt_bench.config.profiles import get_profile
    from crt_bench.core.provenance import device_name, pick_device

    if not log.isEnabledFor(logging.INFO):
        return
    prof = get_profile(profile)
    err.rule(Text.assemble("crt-bench", " profile ", (prof.name, "bold cyan")))
    lines = [prof.description, f"epochs: {prof.epoch_scale:g} x each method's recipe epochs and lr milestones"]
    err.print("\n".join([*(lines if describe_profile else []), f"device: {device_name(pick_device(device))}", what]))
    err.rule()
