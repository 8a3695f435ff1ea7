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


def check_inputs(*, device: str | None = None, tf32_flag: str | None = None, profile: str | None = None) -> None:
    """An unusable device, TF32 (``tf32_flag``: the flag that asked for it) on a device that cannot honour
    it, or a GPU profile (``profile``, :data:`~crt_bench.config.profiles.GPU_PROFILES`) on a machine without a
    GPU unless ``--device cpu`` says so: one line and exit 2 before anything is printed or written (needs
    torch: called by the command)."""
    from crt_bench.config.profiles import GPU_PROFILES
    from crt_bench.core.provenance import pick_device
    from crt_bench.core.tf32 import check_tf32

    if device is not None:
        chosen = pick_device(device)
        if tf32_flag is not None:
            check_tf32(True, chosen, tf32_flag)
        if profile in GPU_PROFILES and device != "cpu" and chosen.type != "cuda":
            raise CrtBenchError(f"profile {profile} is sized for a GPU and this machine has none visible: use a CPU "
                                f"profile (cpu, cpu-full, smoke), or --device cpu to run {profile} on the CPU anyway")


def parse_sets(pairs: list[str], flag: str = "--set") -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CrtBenchError(f"{flag} takes KEY=VALUE, got {pair!r}")
        parsed[key.strip()] = value.strip()
    return parsed


# The SLURM options of the grid commands (sweep, reproduce): one definition each, checked by slurm_options.
PartitionOpt = Annotated[Optional[str], typer.Option(help="slurm: partition (default: the cluster's)")]
GpusOpt = Annotated[Optional[int], typer.Option(
    min=0, help="slurm: GPUs per job (default: --nproc where the partition has GPUs and the jobs run on one, else 0)")]
TimeMinOpt = Annotated[int, typer.Option(min=1, help="time limit per job, minutes")]
CpusPerTaskOpt = Annotated[Optional[int], typer.Option(min=1, help="slurm: CPUs per task")]
MemOpt = Annotated[Optional[str], typer.Option(help="slurm: memory per node, as sbatch's --mem (16G)")]
SlurmOptOpt = Annotated[list[str], typer.Option(
    "--slurm-opt", metavar="KEY=VALUE", help="slurm: any other sbatch option, e.g. account=A, qos=Q, constraint=C "
    "(repeatable)")]
ArrayParallelismOpt = Annotated[Optional[int], typer.Option(min=1, help="slurm: jobs of an array running at once "
                                                                        "(default 16)")]


DetachOpt = Annotated[bool, typer.Option(
    "--detach", help="slurm: submit every job at once (the order carried by SLURM dependencies) and return; "
    "`crt-bench status RESULTS` follows the grid, the same command again attaches to its live jobs")]


def check_detach(detach: bool, executor: str) -> None:
    """``--detach`` needs a scheduler that keeps the jobs: one clear line otherwise (nothing is run)."""
    if detach and executor != "slurm":
        raise CrtBenchError(f"--detach needs --executor slurm: the {executor} executor runs the jobs on this machine, "
                            "in or under this command, so they end with it (leave --detach out)")


def slurm_options(executor: str, *, partition: str | None, gpus: int | None, time_min: int,
                  cpus_per_task: int | None, mem: str | None, slurm_opt: list[str],
                  array_parallelism: int | None) -> dict[str, Any]:
    """The keyword arguments of :func:`crt_bench.grid.executors.make_executor` for these options; a SLURM-only
    option given with another executor is one clear line (nothing is run or submitted)."""
    given = [flag for flag, value in (("--partition", partition), ("--gpus", gpus), ("--cpus-per-task", cpus_per_task),
                                      ("--mem", mem), ("--slurm-opt", slurm_opt or None),
                                      ("--array-parallelism", array_parallelism)) if value is not None]
    if given and executor != "slurm":
        raise CrtBenchError(f"{', '.join(given)} {'is a SLURM option' if len(given) == 1 else 'are SLURM options'}: "
                            f"it needs --executor slurm (the {executor} executor runs on this machine)")
    return dict(partition=partition, gpus=gpus, time_min=time_min, cpus_per_task=cpus_per_task, mem=mem,
                slurm_extra=parse_sets(slurm_opt, "--slurm-opt"), array_parallelism=array_parallelism or 16)


def parse_method_sets(pairs: list[str]) -> dict[str, dict[str, str]]:
    """``["smoothadv.m=8"]`` -> ``{"smoothadv": {"m": "8"}}`` (``crt-bench time --set METHOD.KEY=VALUE``)."""
    parsed: dict[str, dict[str, str]] = {}
    for pair in pairs:
        name, dot, rest = pair.partition(".")
        if not dot or not name or "=" not in rest:
            raise CrtBenchError(f"--set takes METHOD.KEY=VALUE (e.g. smoothadv.m=8), got {pair!r}")
        parsed.setdefault(name.strip(), {}).update(parse_sets([rest]))
    return parsed
