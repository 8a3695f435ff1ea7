"""Options shared by the commands: choices checked at parse time (and listed in ``--help``), the results
folder checked at parse time, and checks of values that need torch (devices) at the start of a command.

Nothing here imports torch, pandas or the like: ``crt-bench --help`` and a bad choice answer at once.
"""
from __future__ import annotations

import functools
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Callable, Iterable, Optional

import typer

from crt_bench.config import choices
from crt_bench.config.profiles import PROFILES
from crt_bench.core.errors import CrtBenchError
from crt_bench.data.catalog import DATASETS
from crt_bench.methods.registry import list_methods
from crt_bench.models.registry import list_archs
from crt_bench.store.checks import check_results_dir

PROBE_PROFILES = ("smoke", "gpu-smoke", "cpu", "cpu-full", "paper")  # crt_bench.timing.probe.PROBES (a test checks)
PLAN_PROFILES = ("auto", "smoke", "gpu-smoke", "cpu", "cpu-full", "paper")  # "auto" + crt_bench.grid.reproduce.PLANS


def names_enum(name: str, names: Iterable[str]) -> type[Enum]:
    """A str Enum whose members are ``names`` (values = names): typer validates it at parse time, lists it in
    ``--help`` and completes it in the shell; commands get plain strings back (:func:`plain_values`)."""
    return Enum(name, {n: n for n in names}, type=str)


ProfileName = names_enum("ProfileName", PROFILES)
ProbeProfile = names_enum("ProbeProfile", PROBE_PROFILES)
PlanProfile = names_enum("PlanProfile", PLAN_PROFILES)
DatasetName = names_enum("DatasetName", DATASETS)
MethodName = names_enum("MethodName", [m.name for m in list_methods()])
ArchName = names_enum("ArchName", [n for a in list_archs() for n in (a.name, *a.aliases)])
ARCH_METAVAR = "[" + "|".join(a.name for a in list_archs()) + "]"  # aliases are accepted, not listed


def plain_values(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` called with each Enum choice (also inside lists) replaced by its string value, so the
    library, the stored rows and the messages only ever see plain strings."""

    def plain(value: Any) -> Any:
        if isinstance(value, Enum):
            return value.value
        return [plain(v) for v in value] if isinstance(value, list) else value

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return command(*[plain(a) for a in args], **{k: plain(v) for k, v in kwargs.items()})

    return wrapper


def _writable_results(value: Path) -> Path:
    """Parse-time check of a results folder a command writes: not a file, writable, room left."""
    check_results_dir(value)
    return value


def _readable_results(value: Path) -> Path:
    """Parse-time check of a results folder a command only reads: it exists and is a folder."""
    check_results_dir(value, write=False)
    return value


ResultsOpt = Annotated[Path, typer.Option("--results", help="results directory (parquet store)",
                                          callback=_writable_results)]


def _read_write_results(value: Path) -> Path:
    return _writable_results(_readable_results(value))


ResultsReadOpt = Annotated[Path, typer.Option("--results", help="results directory (parquet store)",
                                              callback=_readable_results)]
ResultsDirArg = Annotated[Path, typer.Argument(help="results directory", callback=_readable_results)]
ReadWriteResultsDirArg = Annotated[Path, typer.Argument(help="results directory (summary.csv is written there)",
                                                        callback=_read_write_results)]
DataDirOpt = Annotated[Optional[str], typer.Option("--data-dir", help="where the dataset files are")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")]
ProfileOpt = Annotated[ProfileName, typer.Option(help="experiment size (crt-bench list profiles)")]
JsonOpt = Annotated[bool, typer.Option("--json", help="print the rows as JSON instead of a table")]


def check_inputs(*, device: str | None = None, tf32_flag: str | None = None) -> None:
    """An unusable device, or TF32 (``tf32_flag``: the flag that asked for it) on a device that cannot honour
    it: one line and exit 2 before anything is printed or written (needs torch: called by the command)."""
    from crt_bench.core.provenance import pick_device
    from crt_bench.core.tf32 import check_tf32

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


def parse_method_sets(pairs: list[str]) -> dict[str, dict[str, str]]:
    """``["smoothadv.m=8"]`` -> ``{"smoothadv": {"m": "8"}}`` (``crt-bench time --set METHOD.KEY=VALUE``)."""
    parsed: dict[str, dict[str, str]] = {}
    for pair in pairs:
        name, dot, rest = pair.partition(".")
        if not dot or not name or "=" not in rest:
            raise CrtBenchError(f"--set takes METHOD.KEY=VALUE (e.g. smoothadv.m=8), got {pair!r}")
        parsed.setdefault(name.strip(), {}).update(parse_sets([rest]))
    return parsed
