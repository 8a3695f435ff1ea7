"""Commands that run grids: ``sweep``, ``chain``, ``time``, ``reproduce``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from crt_bench.cli.options import (ARCH_METAVAR, ArchName, ArrayParallelismOpt, CpusPerTaskOpt, DataDirOpt,
                                   DatasetName, DetachOpt, DeviceOpt, GpusOpt, JsonOpt, MemOpt, MethodName,
                                   PartitionOpt, PlanProfile, ProbeProfile, ProfileOpt, ResultsOpt, SlurmOptOpt,
                                   TimeMinOpt, check_detach, check_inputs, parse_method_sets, slurm_options)
from crt_bench.cli.cmd_status import print_submitted
from crt_bench.cli.output import banner, info, out, print_json
from crt_bench.config.choices import ChainOrder, Executor
from crt_bench.core.errors import JobsFailed
from crt_bench.core.states import DONE_STATES, FAILED_STATES

log = logging.getLogger("crt_bench.cli")
EXECUTOR_HELP = "local: subprocesses; slurm: sbatch; debug: in-process (submitit); inline: in-process, no submitit"
MAX_PARALLEL_HELP = ("jobs running at once (default: local with GPUs: one job per GPU, each with GPUs of its own; "
                     "else 1); more than the GPUs share them")


def sweep(
    method: Annotated[list[MethodName], typer.Option("--method", help="repeatable")] = ["gaussian", "crt"],
    arch: Annotated[list[ArchName], typer.Option("--arch", metavar=ARCH_METAVAR, help="repeatable")] = ["resnet20"],
    sigma: Annotated[list[float], typer.Option("--sigma", help="repeatable")] = [0.25],
    seed: Annotated[list[int], typer.Option("--seed", help="repeatable")] = [0],
    profile: ProfileOpt = "smoke",
    teacher_method: Annotated[MethodName, typer.Option(help="how CRT's teachers are trained")] = "smoothmix",
    teacher_arch: Annotated[list[ArchName], typer.Option("--teacher-arch", metavar=ARCH_METAVAR, help="repeatable")] = [
        "resnet110"],
    dataset: Annotated[Optional[DatasetName], typer.Option(help="default: the profile's")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1)] = None,
    train_limit: Annotated[Optional[int], typer.Option(min=1)] = None,
    certify: bool = True,
    executor: Annotated[Executor, typer.Option(help=EXECUTOR_HELP)] = "local",
    max_parallel: Annotated[Optional[int], typer.Option(min=1, help=MAX_PARALLEL_HELP)] = None,
    nproc: Annotated[int, typer.Option(min=1, help="processes (ranks) per job: data-parallel training of each run")] = 1,
    partition: PartitionOpt = None,
    gpus: GpusOpt = None,
    time_min: TimeMinOpt = 24 * 60,
    cpus_per_task: CpusPerTaskOpt = None,
    mem: MemOpt = None,
    slurm_opt: SlurmOptOpt = [],
    array_parallelism: ArrayParallelismOpt = None,
    detach: DetachOpt = False,
    dry_run: Annotated[bool, typer.Option(help="list the jobs (and, for slurm, the sbatch script); run nothing")] = False,
    json: Annotated[bool, typer.Option("--json", help="--dry-run: the jobs as JSON")] = False,
    data_dir: DataDirOpt = None,
    device: Annotated[str, typer.Option(help="where the jobs run: auto, cpu, cuda, cuda:N (checked here unless "
                                              "slurm)")] = "auto",
    results: ResultsOpt = Path("results"),
) -> None:
    """Run a grid (methods x archs x sigmas x seeds; CRT per teacher) through submitit; resumable."""
    from crt_bench.grid.executors import make_executor, sbatch_preview, slurm_parameters
    from crt_bench.grid.jobs import GridSpec
    from crt_bench.grid.runner import GRID_STOPPED_HINT, run_grid

    check_detach(detach, executor)
    slurm = slurm_options(executor, partition=partition, gpus=gpus, time_min=time_min, cpus_per_task=cpus_per_task,
                          mem=mem, slurm_opt=slurm_opt, array_parallelism=array_parallelism)
    check_inputs(device=None if executor == "slurm" else device, profile=None if executor == "slurm" else profile)
    if executor == "local":
        from crt_bench.grid.gpus import local_pool

        local_pool(device, nproc)  # --nproc above the GPUs: one line before anything is printed
    spec = GridSpec(methods=method, archs=arch, sigmas=sigma, seeds=seed, profile=profile,
                    teacher_method=teacher_method, teacher_archs=teacher_arch, dataset=dataset, data_dir=data_dir,
                    epochs=epochs, train_limit=train_limit, certify=certify, device=device)
    jobs = spec.jobs()
    if dry_run:  # the GPU ask as it would be on a partition with GPUs (nothing asks the scheduler)
        preview = {**slurm, "gpus": 0 if device == "cpu" else (nproc if gpus is None else gpus)}
        sbatch = sbatch_preview(results / "submitit", **slurm_parameters(**preview)) if executor == "slurm" else None
        if json:
            print_json([dict(key=j.key, method=j.method, arch=j.arch, sigma=j.sigma, seed=j.seed, profile=j.profile,
                             teacher=j.teacher, **({"sbatch": sbatch} if sbatch else {})) for j in jobs])
            return
        for job in jobs:
            out.print(job.key)
        if sbatch:
            out.print(sbatch)
        return
    from crt_bench.config.profiles import get_profile
    from crt_bench.grid.preflight import preflight
    from crt_bench.store.checks import check_results_dir
    from crt_bench.store.locks import check_locks

    at_once = max_parallel or "one per GPU (1 without a GPU)"
    banner(profile, f"sweep: {len(jobs)} jobs via submitit's {executor} executor, at most {at_once} at once",
            device=device if executor != "slurm" else "auto")
    announced = None  # the device every job must run on (a job elsewhere refuses to start)
    if executor == "slurm":  # the data and the device are the compute nodes', not this machine's
        checks = [check_results_dir(results), check_locks(results)]
    else:
        report = preflight(datasets={job.dataset or get_profile(job.profile).dataset for job in jobs},
                           results=results, data_dir=data_dir, device=device, install_data=False)
        checks, announced = report.lines, report.device
    for line in checks:
        log.info(f"preflight: {line}")
    ex = make_executor(executor, results / "submitit", nproc=nproc, device=device, profile=profile,
                       max_parallel=max_parallel, **slurm)
    from crt_bench.core.signals import exit_on_stop

    from crt_bench.grid.detach import attach, submit_detached

    if detach:
        with exit_on_stop("stopped while submitting: what this command had submitted was cancelled"):
            print_submitted(submit_detached(jobs, results, ex), results)
        return
    attached = attach(jobs, results, results / "submitit") if executor == "slurm" else {}
    with exit_on_stop(GRID_STOPPED_HINT):
        status = run_grid(jobs, results, ex, max_parallel=max_parallel if executor != "slurm" else len(jobs),
                          expect_device=announced, attached=attached)
    table = Table(title="sweep")
    for col in ("job", "state", "run id", "error / log"):
        table.add_column(col)
    for _, r in status.iterrows():
        table.add_row(r["key"], r["state"], r["run_id"], r["error"] + (f" ({r['log']})" if r["log"] else ""))
    info(table)
    failed = status["state"].isin(FAILED_STATES)
    if failed.any():
        raise JobsFailed(f"{int(failed.sum())} of {len(status)} jobs failed or were blocked; see the table above")


def chain(
    teacher: Annotated[str, typer.Option(help="the root teacher: run id or model file (certified on the same images)")],
    arch: Annotated[list[ArchName], typer.Option(
        "--arch", metavar=ARCH_METAVAR, help="a generation's architecture (repeatable)")],
    profile: ProfileOpt = "smoke",
    order: Annotated[ChainOrder, typer.Option(help="release: the registry's generation year")] = "release",
    sigma: float = 0.25,
    seed: int = 0,
    dataset: Annotated[Optional[DatasetName], typer.Option(help="default: the profile's")] = None,
    epochs: Annotated[Optional[int], typer.Option(min=1)] = None,
    train_limit: Annotated[Optional[int], typer.Option(min=1)] = None,
    executor: Annotated[Executor, typer.Option(help=EXECUTOR_HELP)] = "local",
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    results: ResultsOpt = Path("results"),
) -> None:
    """Recursive CRT: each --arch is distilled from the previous one's student; resumable link by link."""
    from crt_bench.analysis.chains import chain_table
    from crt_bench.core.checks import check_sigma
    from crt_bench.core.signals import exit_on_stop
    from crt_bench.grid.runner import GRID_STOPPED_HINT
    from crt_bench.grid.chain import ChainSpec, run_chain
    from crt_bench.grid.executors import make_executor
    from crt_bench.report.chains import chain_markdown

    check_inputs(device=None if executor == "slurm" else device, profile=profile)
    check_sigma(sigma)
    spec = ChainSpec(root=teacher, archs=tuple(arch), profile=profile, sigma=sigma, seed=seed, order=order,
                     dataset=dataset, data_dir=data_dir, epochs=epochs, train_limit=train_limit, device=device)
    banner(profile, f"chain {spec.chain_name}: {teacher} -> " + " -> ".join(spec.ordered_archs()),
            device=device if executor != "slurm" else "auto")
    with exit_on_stop(GRID_STOPPED_HINT):
        status = run_chain(spec, results, make_executor(executor, results / "submitit", device=device, profile=profile))
    from crt_bench.store.chains import saved_chains
    from crt_bench.store.store import ResultsStore

    saved = next(c for c in saved_chains(results) if c["name"] == spec.chain_name)
    out.print(chain_markdown(chain_table(ResultsStore(results), saved)))
    failed = status[~status["state"].isin(DONE_STATES)]
    if not failed.empty:
        raise JobsFailed(f"{len(failed)} link(s) did not finish: " + "; ".join(
            f"{r.key}: {r.state} {r.error}".strip() for r in failed.itertuples()) + "; re-run to continue")


def time_cmd(
    profile: Annotated[ProbeProfile, typer.Option(help="probe size")] = "cpu",
    method: Annotated[list[MethodName], typer.Option(
        "--method", help="methods to time (repeatable; default: all)")] = [],
    arch: Annotated[list[ArchName], typer.Option(
        "--arch", metavar=ARCH_METAVAR,
        help="architectures (repeatable; default: the generation registry plus resnet20/resnet110)")] = [],
    teacher: Annotated[list[ArchName], typer.Option("--teacher", metavar=ARCH_METAVAR, help="CRT teacher archs")] = [
        "resnet110", "resnet20"],
    sigma: float = 0.25,
    batches: Annotated[Optional[int], typer.Option(min=1, help="timed loader batches per repeat")] = None,
    repeats: Annotated[Optional[int], typer.Option(min=1)] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="default: the profile's (paper: each recipe's)")] = None,
    force: Annotated[bool, typer.Option(help="re-time probes already in the store")] = False,
    protocol: Annotated[str, typer.Option(
        help="engine: the training step alone on on-device data; paper: the official scripts' loop (fp32, a "
             "DataLoader with augmentation, .item() per step, the per-epoch test pass; standard training at "
             "150x256 and 200x128 timed beside)")] = "engine",
    precision: Annotated[Optional[str], typer.Option(
        help="fp32, tf32 (Ampere+ GPUs) or bf16 (GPUs with native bf16); default: the protocol's "
             "(engine: bf16 where native, paper: fp32)")] = None,
    set_: Annotated[list[str], typer.Option(
        "--set", help="a method's hyper-parameter METHOD.KEY=VALUE, e.g. smoothadv.m=4 (repeatable)")] = [],
    device: DeviceOpt = "auto",
    results: ResultsOpt = Path("results"),
) -> None:
    """Timing probes per method x architecture; projected epoch and recipe hours go to the timing table."""
    from crt_bench.core.checks import check_sigma
    from crt_bench.timing.grid import probe_config, run_timing_grid

    probe_config(profile)  # a profile without probe sizes, or an unknown one
    check_inputs(device=device)
    check_sigma(sigma)
    sets = parse_method_sets(set_)
    banner(profile, f"timing probes ({protocol} protocol): methods x architectures at the methods' paper "
           "hyper-parameters", device=device)
    df = run_timing_grid(results, profile=profile, methods=method, archs=arch, teachers=teacher, sigma=sigma,
                         batches=batches, repeats=repeats, batch_size=batch_size, force=force, device=device,
                         protocol=protocol, precision=precision, sets=sets)
    log.info(f"{len(df)} timing rows in {results}/tables/timing")


def reproduce(
    profile: Annotated[PlanProfile, typer.Option(help="auto: paper on a GPU, cpu otherwise")] = "auto",
    executor: Annotated[Executor, typer.Option(help=EXECUTOR_HELP)] = "local",
    max_parallel: Annotated[Optional[int], typer.Option(min=1, help=MAX_PARALLEL_HELP)] = None,
    nproc: Annotated[int, typer.Option(min=1, help="processes (ranks) per job: data-parallel training of each run")] = 1,
    data_dir: DataDirOpt = None,
    install_data: Annotated[bool, typer.Option(
        "--install-data/--no-install-data",
        help="obtain a missing dataset: Debian's package via apt-get (as root), else torchvision's download")] = True,
    out_dir: Annotated[Path, typer.Option("--out", help="where tables, figures and REPORT.md go")] = Path("plots"),
    device: Annotated[str, typer.Option(help="where every job and probe runs: auto, cpu, cuda, cuda:N")] = "auto",
    partition: PartitionOpt = None,
    gpus: GpusOpt = None,
    time_min: TimeMinOpt = 24 * 60,
    cpus_per_task: CpusPerTaskOpt = None,
    mem: MemOpt = None,
    slurm_opt: SlurmOptOpt = [],
    array_parallelism: ArrayParallelismOpt = None,
    sigma: Annotated[list[float], typer.Option(
        "--sigma", help="noise level (repeatable; default: the plan's, 0.25)")] = [],
    student: Annotated[list[str], typer.Option(
        "--student", metavar="ARCH|all", help="student architecture instead of the profile's (repeatable; all: "
                                               "every generation of the registry)")] = [],
    certify_subset: Annotated[Optional[str], typer.Option(
        help="test images every job certifies instead of the profile's (paper: skip:20, 500 images): all, skip:K, "
             "range:A:B")] = None,
    certify_precision: Annotated[Optional[str], typer.Option(
        help="certification forward instead of the profile's (paper on CUDA: bf16 + torch.compile): fp32, tf32, "
             "bf16, fp16, fastest")] = None,
    dry_run: Annotated[bool, typer.Option(help="print the plan and its projected bill (GPU-hours per job, total, "
                                               "critical path, wall-clock on 1 and --bill-gpus GPUs); run "
                                               "nothing")] = False,
    bill_gpus: Annotated[int, typer.Option(min=1, help="GPUs the bill's wall-clock is projected on")] = 8,
    detach: DetachOpt = False,
    results: ResultsOpt = Path("results"),
) -> None:
    """The paper's experiments at the profile's size, resumably, then every table and figure.

    Checks first (data, device, results folder: seconds), and obtains the profile's dataset when it is
    missing; then trains and certifies every model of the plan, times every method, and writes the report.
    """
    from crt_bench.analysis.summary import summary_table
    from crt_bench.cli.render import rich_summary
    from crt_bench.grid.reproduce import auto_profile, plan_for, run_reproduce
    from crt_bench.store.store import ResultsStore

    check_detach(detach, executor)
    slurm = slurm_options(executor, partition=partition, gpus=gpus, time_min=time_min, cpus_per_task=cpus_per_task,
                          mem=mem, slurm_opt=slurm_opt, array_parallelism=array_parallelism)
    # The plan first (a subset beyond the test set, an unknown precision), then the machine; all before output.
    picked = {"students": list(student)} if student else {}  # plan_for(profile, data_dir) where none is asked
    plan = plan_for(auto_profile(device) if profile == "auto" else profile, data_dir, **picked).on_device(device)
    plan = plan.with_sigmas(list(sigma)).with_certify(certify_subset, certify_precision)
    if not dry_run:  # a bill needs no device
        check_inputs(device=device, profile=None if executor == "slurm" else profile)
    if executor == "local":
        from crt_bench.grid.gpus import local_pool

        local_pool(device, nproc)  # --nproc above the GPUs: one line before anything is printed
    if dry_run:
        from crt_bench.grid.bill import bill_lines

        out.print(f"profile {plan.profile}: {plan.describe()}", markup=False, soft_wrap=True)
        for line in bill_lines(plan.bill(bill_gpus), title=f"profile {plan.profile}"):
            out.print(line, markup=False, soft_wrap=True, highlight=False)
        return
    banner(plan.profile, plan.describe(), device=device)
    from crt_bench.core.signals import exit_on_stop
    from crt_bench.grid.runner import GRID_STOPPED_HINT

    with exit_on_stop(GRID_STOPPED_HINT):
        submitted = run_reproduce(plan, results, out_dir, executor=executor, max_parallel=max_parallel,
                                  install_data=install_data, nproc=nproc, slurm=slurm, bill_gpus=bill_gpus,
                                  detach=detach)
    if detach:
        print_submitted(submitted, results)
        return
    df = summary_table(ResultsStore(results))
    if not df.empty:
        out.print(rich_summary(df))
    log.info(f"report: {out_dir / 'REPORT.md'}")
