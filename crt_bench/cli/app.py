"""The ``crt-bench`` command line: run | certify | summary | import-log | export-log | list | reproduce."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crt_bench import methods as _methods  # noqa: F401  (registers methods)
from crt_bench import models as _archs  # noqa: F401  (registers architectures)
from crt_bench.config.profiles import PROFILES
from crt_bench.core.errors import CrtBenchError
from crt_bench.grid.reproduce import PLANS
from crt_bench.timing.probe import PROBES

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure what it costs to make an architecture certifiably robust (randomized smoothing).")
# Tables are wide: outside a terminal (pipes, CI logs) do not squeeze them into 80 columns.
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
out = Console(width=None if sys.stdout.isatty() else 200)

ResultsOpt = Annotated[Path, typer.Option("--results", help="results directory (parquet store)")]
DataDirOpt = Annotated[Optional[str], typer.Option("--data-dir", help="where the dataset files are")]
DeviceOpt = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")]
PROFILE_HELP = " | ".join(PROFILES)  # crt-bench list profiles


def _check_inputs(*, profile: str | None = None, device: str | None = None, tf32_flag: str | None = None) -> None:
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


def _parse_sets(pairs: list[str]) -> dict[str, str]:
    parsed = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CrtBenchError(f"--set takes KEY=VALUE, got {pair!r}")
        parsed[key.strip()] = value.strip()
    return parsed


def _banner(profile: str, what: str, *, describe_profile: bool = True, device: str = "auto") -> None:
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


@app.command()
def run(
    method: Annotated[str, typer.Option(help="training method (crt-bench list methods)")] = "gaussian",
    arch: Annotated[str, typer.Option(help="architecture (crt-bench list archs)")] = "resnet20",
    profile: Annotated[str, typer.Option(help=PROFILE_HELP)] = "smoke",
    dataset: Annotated[Optional[str], typer.Option(help="cifar10 | fashion-mnist | synthetic | imagenet | imagenet-small (default: profile's)")] = None,
    sigma: Annotated[float, typer.Option(help="noise level in [0,1] pixel units")] = 0.25,
    teacher: Annotated[Optional[str], typer.Option(help="teacher run id or checkpoint path (crt)")] = None,
    teacher_input_layer: Annotated[str, typer.Option(
        help="reference checkpoints only: normalize (Cohen, Jeong) or center (Salman's InputCenterLayer)")] = "normalize",
    epochs: Annotated[Optional[int], typer.Option(help="override the recipe/profile epochs")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="override the batch size")] = None,
    lr: Annotated[Optional[float], typer.Option(help="override the initial learning rate")] = None,
    seed: int = 0,
    set_: Annotated[list[str], typer.Option("--set", help="method hyper-parameter KEY=VALUE (repeatable)")] = [],
    train_limit: Annotated[Optional[int], typer.Option(help="use only this many training images")] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    resume: Annotated[Optional[str], typer.Option(help="continue this run id from its last checkpoint")] = None,
    channels_last: Annotated[Optional[bool], typer.Option(
        "--channels-last/--no-channels-last", help="NHWC student and batches (default: for conv nets)")] = None,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the student")] = False,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="bf16 autocast of the training step on CUDA")] = True,
    teacher_precision: Annotated[str, typer.Option(
        help="CRT teacher forward: auto (bf16 where the device has native bf16) | fp32 | bf16")] = "auto",
    profile_steps: Annotated[int, typer.Option(
        help="record this many training steps with torch.profiler (trace in the run's profile/ folder)")] = 0,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    nproc: Annotated[int, typer.Option(
        help="data-parallel processes on this machine: relaunches this command under torchrun (one GPU each)")] = 1,
    sync_bn: Annotated[bool, typer.Option(
        "--sync-bn/--no-sync-bn", help="data-parallel runs: batch norm over the global batch (CUDA)")] = False,
    tf32: Annotated[bool, typer.Option(
        "--tf32/--no-tf32", help="TF32 float32 matmuls and convolutions (Ampere+ GPUs; default off: IEEE fp32)")] = False,
    results: ResultsOpt = Path("results"),
) -> None:
    """Train one model; the last line of standard output is the new run's id.

    Several processes: `--nproc K`, or `torchrun --nproc_per_node K -m crt_bench.cli run ...` (any
    launcher that sets RANK/WORLD_SIZE); the recipe's batch is split over them (crt_bench.distributed).
    """
    import os
    import subprocess

    _check_inputs(profile=profile, device=device, tf32_flag="--tf32" if tf32 else None)  # before torchrun children
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        from crt_bench.parallel.torchrun import strip_option, torchrun_command

        raise typer.Exit(subprocess.run(torchrun_command(nproc, strip_option(sys.argv[1:], "--nproc"))).returncode)
    from crt_bench.core.checks import check_sigma
    from crt_bench.core.signals import stop_on_signals
    from crt_bench.store.store import ResultsStore
    from crt_bench.train.resolve import resolve_run_config
    from crt_bench.train.trainer import resume_run, train_run

    store = ResultsStore(results)
    check_sigma(sigma)
    hint = "stopped; `crt-bench run --resume RUN_ID` continues a run from its last finished epoch"
    if resume:
        with stop_on_signals(hint):
            run_id = resume_run(resume, store, progress=progress)
    else:
        cfg = resolve_run_config(method, arch, profile=profile, dataset=dataset, sigma=sigma, epochs=epochs,
                                 batch_size=batch_size, lr=lr, seed=seed, teacher=teacher,
                                 teacher_input_layer=teacher_input_layer, hparams=_parse_sets(set_),
                                 train_limit=train_limit, data_dir=data_dir, device=device, amp=amp,
                                 channels_last=channels_last, compile=compile, teacher_precision=teacher_precision,
                                 profile_steps=profile_steps, tf32=tf32)
        if sync_bn:
            from dataclasses import replace

            cfg = replace(cfg, sync_bn=True)
        _banner(profile, f"run: {cfg.method} on {cfg.arch}, {cfg.dataset} "
                         f"({cfg.train_limit or 'all'} training images), sigma {cfg.sigma}, {cfg.epochs} epochs"
                         + (f" ({cfg.epoch_scale:g} x the recipe's {cfg.recipe_epochs})" if cfg.epoch_scale else "")
                         + f", batch {cfg.batch_size}, lr {cfg.lr} (x{cfg.gamma} at {list(cfg.milestones)}), seed {cfg.seed}"
                         + (f", teacher {cfg.teacher}" if cfg.teacher else ""), describe_profile=False, device=device)
        with stop_on_signals(hint):
            run_id = train_run(cfg, store, progress=progress)
    if int(os.environ.get("RANK", "0")) == 0:  # one id on stdout, however many ranks share it
        print(run_id)


@app.command()
def certify(
    run_id: Annotated[str, typer.Argument(help="run id or model checkpoint path")],
    n0: Annotated[Optional[int], typer.Option("--n0", help="selection samples (default: profile's)")] = None,
    n: Annotated[Optional[int], typer.Option(
        "--n", "--num-samples", help="estimation samples (default: profile's); under torchrun write --num-samples "
        "(torchrun's parser takes --n for an abbreviation of its own options)")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="failure probability")] = None,
    batch: Annotated[Optional[int], typer.Option(help="noisy samples per forward pass (default: chosen)")] = None,
    precision: Annotated[Optional[str], typer.Option(
        help="base classifier forward: fp32 | tf32 (Ampere+ GPUs) | bf16 | fp16 (noise stays float32; recorded)")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model")] = None,
    subset: Annotated[Optional[str], typer.Option(help="all | skip:K | range:A:B[:K]")] = None,
    sigma: Annotated[Optional[float], typer.Option(help="smoothing noise (default: the run's)")] = None,
    input_layer: Annotated[str, typer.Option(
        help="reference checkpoints only: normalize (Cohen, Jeong) or center (Salman)")] = "normalize",
    seed: int = 0,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    progress: bool = True,
    flush_every: Annotated[int, typer.Option(
        help="append the certified rows every this many images (a kill loses at most these)")] = 64,
    shards: Annotated[int, typer.Option(
        help="split the images over this many processes (local ones, one GPU each; under torchrun: the ranks)")] = 1,
    shard: Annotated[Optional[int], typer.Option(
        help="certify only shard I of --shards (a SLURM array task); default under torchrun: RANK of WORLD_SIZE")] = None,
    results: ResultsOpt = Path("results"),
) -> None:
    """CERTIFY (Cohen et al.) every selected test image; one row per image in the certify table.

    Resumable: the same command again continues where an interrupted one stopped (same rows).
    Sharded (--shards K): the parts are one certification with the rows of an unsharded run.
    """
    from dataclasses import replace

    from crt_bench.analysis.summary import summary_table
    from crt_bench.certify.resumable import certify_run
    from crt_bench.cli.render import rich_summary
    from crt_bench.config.certify import CertifyConfig
    from crt_bench.config.profiles import get_profile
    from crt_bench.store.store import ResultsStore

    _check_inputs(device=device)
    store = ResultsStore(results)
    if sigma is not None:
        from crt_bench.core.checks import check_sigma

        check_sigma(sigma)
    profile = _run_profile(store, run_id)
    base = get_profile(profile).certify if profile else CertifyConfig()
    overrides = {k: v for k, v in dict(n0=n0, n=n, alpha=alpha, batch=batch, subset=subset, precision=precision,
                                        compile=compile).items() if v is not None}
    ccfg = replace(base, **overrides)
    ccfg.validate()
    from crt_bench.certify.precision import uses_tf32

    if uses_tf32(ccfg.precision):  # before any shard starts
        _check_inputs(device=device, tf32_flag="--precision tf32")
    err.print(f"certify {run_id}: N0={ccfg.n0} N={ccfg.n} alpha={ccfg.alpha} batch={ccfg.batch or 'auto'} "
              f"subset={ccfg.subset} precision={ccfg.precision}{' compiled' if ccfg.compile else ''}")
    from crt_bench.certify.shards import ShardSpec, launch_local, shard_from_env
    from crt_bench.core.signals import stop_on_signals
    from crt_bench.parallel.env import barrier_if_distributed, local_device_from_env

    one = ShardSpec(shard, shards) if shard is not None else shard_from_env()
    device = local_device_from_env(device) if one is not None and shard is None else device
    if one is None and shards > 1:  # the local launcher: K children, then the unsharded pass closes it
        child_args = [run_id, "--n0", str(ccfg.n0), "--n", str(ccfg.n), "--alpha", str(ccfg.alpha),
                      "--subset", ccfg.subset, "--precision", ccfg.precision, "--seed", str(seed),
                      "--input-layer", input_layer, "--device", device, "--no-progress",
                      "--flush-every", str(flush_every), "--results", str(results),
                      "--compile" if ccfg.compile else "--no-compile",
                      *(["--batch", str(ccfg.batch)] if ccfg.batch else []),
                      *(["--sigma", str(sigma)] if sigma is not None else []),
                      *(["--data-dir", data_dir] if data_dir else [])]
        err.print(f"certify {run_id}: {shards} shard processes", highlight=False)
        launch_local(child_args, shards)
    with stop_on_signals("stopped; run the same `crt-bench certify` command again to continue"):
        cert_id, _ = certify_run(run_id, store, ccfg, sigma=sigma, data_dir=data_dir, device=device, seed=seed,
                                 progress=progress, input_layer=input_layer, flush_images=flush_every, shard=one)
    if one is not None:
        if not (shard is None and barrier_if_distributed()):  # a lone shard, or a torchrun rank other than 0
            print(cert_id)
            return
        cert_id, _ = certify_run(run_id, store, ccfg, sigma=sigma, data_dir=data_dir, device=device, seed=seed,
                                 progress=False, input_layer=input_layer, flush_images=flush_every)
    df = summary_table(store)
    err.print(rich_summary(df[df["cert_id"] == cert_id]))
    print(cert_id)


def _run_profile(store: "ResultsStore", run_id: str) -> str | None:  # noqa: F821
    config = store.run_dir(run_id) / "config.json"
    if config.is_file():
        from crt_bench.config.run import RunConfig

        return RunConfig.from_json(config.read_text()).profile
    return None


@app.command()
def summary(
    results_dir: Annotated[Path, typer.Argument(help="results directory")] = Path("results"),
    csv: Annotated[Optional[Path], typer.Option(help="also write the table as CSV here")] = None,
) -> None:
    """Certified accuracy at r = 0, 0.25, ..., 2.25 and ACR of every certification and imported log."""
    from crt_bench.analysis.summary import summary_table
    from crt_bench.cli.render import rich_summary
    from crt_bench.core.atomic import atomic_write_bytes
    from crt_bench.store.store import ResultsStore

    if not results_dir.is_dir():
        raise CrtBenchError(f"results directory {results_dir} does not exist")
    df = summary_table(ResultsStore(results_dir))
    if df.empty:
        raise CrtBenchError(f"no certification results in {results_dir}; run `crt-bench certify RUN` first")
    out.print(rich_summary(df))
    csv = csv or results_dir / "summary.csv"
    atomic_write_bytes(csv, df.to_csv(index=False).encode())
    err.print(f"written {csv}")


@app.command("import-log")
def import_log_cmd(
    file: Annotated[Path, typer.Argument(help="Cohen-format TSV certify log")],
    name: Annotated[str, typer.Option(help="name of the imported certification")],
    sigma: Annotated[Optional[float], typer.Option(help="the log's smoothing sigma, if known")] = None,
    n0: int = 100,
    n: Annotated[int, typer.Option("--n")] = 100_000,
    alpha: float = 0.001,
    hours: Annotated[Optional[float], typer.Option(help="leaderboard: the model's reported training hours")] = None,
    method: Annotated[Optional[str], typer.Option(help="leaderboard: how the model was trained")] = None,
    arch: Annotated[Optional[str], typer.Option(help="leaderboard: the model's architecture")] = None,
    teacher: Annotated[Optional[str], typer.Option(help="leaderboard: CRT's teacher, e.g. 'smoothmix resnet110'")] = None,
    dataset: Annotated[Optional[str], typer.Option(help="leaderboard: the dataset certified (e.g. cifar10)")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="leaderboard: the device that trained it")] = None,
    results: ResultsOpt = Path("results"),
) -> None:
    """Store a published certification log so it appears in summaries, figures and the leaderboard."""
    from crt_bench.store.imports import import_log, record_import_meta
    from crt_bench.store.store import ResultsStore

    if hours is not None and not hours > 0:
        raise CrtBenchError(f"--hours must be a positive number of training hours, got {hours}")
    rows = import_log(file, name, ResultsStore(results), sigma=sigma, n0=n0, n=n, alpha=alpha)
    record_import_meta(results, name, hours=hours, method=method, arch=arch, teacher=teacher, dataset=dataset,
                       device=device)
    err.print(f"imported {len(rows)} rows from {file} as {name!r}")


@app.command()
def leaderboard(
    results_dir: Annotated[Path, typer.Argument(help="results directory")] = Path("results"),
    out_dir: Annotated[Path, typer.Option("--out", help="where LEADERBOARD.md, figures and entries/ go")] = Path(
        "plots/leaderboard"),
    merge: Annotated[list[Path], typer.Option("--merge", help="a folder of JSON entries to add (repeatable)")] = [],
) -> None:
    """Pareto frontier of (training hours, ACR) per dataset, sigma, device, N and certified images."""
    from crt_bench.analysis.leaderboard_entries import entries_from_store, missing_from_store, read_entries
    from crt_bench.analysis.leaderboard_entries import merge as merge_entries
    from crt_bench.report.leaderboard import write_leaderboard
    from crt_bench.store.store import ResultsStore

    if not results_dir.is_dir():
        raise CrtBenchError(f"results directory {results_dir} does not exist")
    store = ResultsStore(results_dir)
    entries = merge_entries(entries_from_store(store), *[read_entries(d) for d in merge])
    if not entries:
        raise CrtBenchError(f"no certification in {results_dir} or the merged folders: nothing to rank")
    written = write_leaderboard(entries, out_dir, missing_from_store(store))
    out.print((out_dir / "LEADERBOARD.md").read_text(), markup=False, highlight=False)
    err.print(f"written {written['markdown'][0]}, {len(written['figures'])} figure file(s), "
              f"{len(written['entries'])} JSON entries in {out_dir / 'entries'}")


@app.command("export-log")
def export_log_cmd(
    cert_id: Annotated[str, typer.Argument(help="certification id (printed by crt-bench certify)")],
    file: Annotated[Path, typer.Argument(help="output TSV path")],
    results: ResultsOpt = Path("results"),
) -> None:
    """Write a certification as a Cohen-format TSV log (radius to 3 significant digits)."""
    from crt_bench.certify.resumable import certification_rows
    from crt_bench.store.cohen_log import write_cohen_log
    from crt_bench.store.store import ResultsStore

    write_cohen_log(certification_rows(ResultsStore(results), cert_id), file)
    err.print(f"written {file}")


@app.command("list")
def list_cmd(
    what: Annotated[str, typer.Argument(help="archs | methods | profiles")] = "archs",
    sizes: Annotated[bool, typer.Option(help="archs: build each and measure params and FLOPs (slower)")] = False,
) -> None:
    """Print a registry."""
    from crt_bench.config.profiles import PROFILES
    from crt_bench.methods.registry import list_methods
    from crt_bench.models.registry import list_archs

    if what == "archs":
        from crt_bench.models.stats import arch_stats

        table = Table(title="architectures" + (" (sizes for CIFAR-10: 10 classes, 3x32x32)" if sizes else ""))
        for col in ("name", "family", "year", "source", *(("params", "GFLOPs/image") if sizes else ()),
                    "description"):
            table.add_column(col)
        for s in list_archs():
            name = s.name + (f" ({', '.join(s.aliases)})" if s.aliases else "")
            cells = []
            if sizes:
                stats = arch_stats(s.name)
                cells = [f"{stats['params'] / 1e6:.2f}M", f"{stats['flops_per_image'] / 1e9:.3f}"]
            table.add_row(name, s.family, str(s.generation), s.source, *cells, s.description)
    elif what == "methods":
        table = Table(title="methods")
        for col in ("name", "teacher", "recipe (epochs / batch / lr / milestones)", "reference"):
            table.add_column(col)
        for m in list_methods():
            r = m.recipe
            table.add_row(m.name, "yes" if m.needs_teacher else "", f"{r.epochs} / {r.batch_size} / {r.lr} / "
                          f"{list(r.milestones)}", m.reference)
    elif what == "profiles":
        table = Table(title="profiles")
        for col in ("name", "dataset", "epoch scale", "certify", "description"):
            table.add_column(col)
        for p in PROFILES.values():
            c = p.certify
            table.add_row(p.name, p.dataset, f"{p.epoch_scale:g} x recipe", f"N0={c.n0} N={c.n} {c.subset}", p.description)
    else:
        raise CrtBenchError(f"unknown registry {what!r}; choose archs, methods or profiles")
    out.print(table)


@app.command()
def sweep(
    method: Annotated[list[str], typer.Option("--method", help="repeatable")] = ["gaussian", "crt"],
    arch: Annotated[list[str], typer.Option("--arch", help="repeatable")] = ["resnet20"],
    sigma: Annotated[list[float], typer.Option("--sigma", help="repeatable")] = [0.25],
    seed: Annotated[list[int], typer.Option("--seed", help="repeatable")] = [0],
    profile: Annotated[str, typer.Option(help=PROFILE_HELP)] = "smoke",
    teacher_method: Annotated[str, typer.Option(help="how CRT's teachers are trained")] = "smoothmix",
    teacher_arch: Annotated[list[str], typer.Option("--teacher-arch", help="repeatable")] = ["resnet110"],
    dataset: Optional[str] = None,
    epochs: Optional[int] = None,
    train_limit: Optional[int] = None,
    certify: bool = True,
    executor: Annotated[str, typer.Option(help="local (subprocesses) | slurm | debug (in-process) | inline (in-process, no submitit)")] = "local",
    max_parallel: Annotated[int, typer.Option(help="jobs running at once (local: CPUs/GPUs to share)")] = 1,
    nproc: Annotated[int, typer.Option(help="processes (ranks) per job: data-parallel training of each run")] = 1,
    partition: Annotated[Optional[str], typer.Option(help="slurm partition")] = None,
    gpus: Annotated[int, typer.Option(help="slurm: GPUs per job")] = 1,
    time_min: Annotated[int, typer.Option(help="time limit per job, minutes")] = 24 * 60,
    cpus_per_task: Annotated[Optional[int], typer.Option(help="slurm: CPUs per job")] = None,
    array_parallelism: Annotated[int, typer.Option(help="slurm: jobs of an array running at once")] = 16,
    dry_run: Annotated[bool, typer.Option(help="list the jobs (and, for slurm, the sbatch script); run nothing")] = False,
    data_dir: DataDirOpt = None,
    device: Annotated[str, typer.Option(help="where the jobs run: auto, cpu, cuda, cuda:N (checked here unless "
                                              "slurm)")] = "auto",
    results: ResultsOpt = Path("results"),
) -> None:
    """Run a grid (methods x archs x sigmas x seeds; CRT per teacher) through submitit; resumable."""
    from crt_bench.grid.executors import make_executor, sbatch_preview, slurm_parameters
    from crt_bench.grid.jobs import GridSpec
    from crt_bench.grid.runner import run_grid

    _check_inputs(profile=profile, device=None if executor == "slurm" else device)
    spec = GridSpec(methods=method, archs=arch, sigmas=sigma, seeds=seed, profile=profile,
                    teacher_method=teacher_method, teacher_archs=teacher_arch, dataset=dataset, data_dir=data_dir,
                    epochs=epochs, train_limit=train_limit, certify=certify, device=device)
    jobs = spec.jobs()
    if max_parallel < 1:
        raise CrtBenchError(f"--max-parallel must be >= 1, got {max_parallel}")
    slurm = dict(partition=partition, gpus=gpus, time_min=time_min, cpus_per_task=cpus_per_task,
                 array_parallelism=array_parallelism)
    if dry_run:
        for job in jobs:
            out.print(job.key, markup=False, highlight=False)
        if executor == "slurm":
            out.print(sbatch_preview(results / "submitit", **slurm_parameters(**slurm)), markup=False,
                      highlight=False)
        return
    from crt_bench.config.profiles import get_profile
    from crt_bench.grid.preflight import preflight
    from crt_bench.store.checks import check_results_dir

    _banner(profile, f"sweep: {len(jobs)} jobs via submitit's {executor} executor, at most {max_parallel} at once",
            device=device if executor != "slurm" else "auto")
    if executor == "slurm":  # the data and the device are the compute nodes', not this machine's
        checks = [check_results_dir(results)]
    else:
        checks = preflight(datasets={job.dataset or get_profile(job.profile).dataset for job in jobs},
                           results=results, data_dir=data_dir, device=device, install_data=False).lines
    for line in checks:
        err.print(f"preflight: {line}", markup=False, highlight=False, soft_wrap=True)
    ex = make_executor(executor, results / "submitit", nproc=nproc, **slurm)
    from crt_bench.core.signals import exit_when_stopped

    with exit_when_stopped():
        status = run_grid(jobs, results, ex, max_parallel=max_parallel if executor != "slurm" else len(jobs))
    table = Table(title="sweep")
    for col in ("job", "state", "run id", "error / log"):
        table.add_column(col)
    for _, r in status.iterrows():
        table.add_row(escape(r["key"]), escape(r["state"]), r["run_id"],
                      escape(r["error"] + (f" ({r['log']})" if r["log"] else "")))
    err.print(table)
    failed = status["state"].str.startswith(("failed", "blocked"))
    if failed.any():
        raise CrtBenchError(f"{int(failed.sum())} of {len(status)} jobs failed or were blocked; see the table above")


@app.command()
def chain(
    teacher: Annotated[str, typer.Option(help="the root teacher: run id or model file (certified on the same images)")],
    arch: Annotated[list[str], typer.Option("--arch", help="a generation's architecture (repeatable)")],
    profile: Annotated[str, typer.Option(help=PROFILE_HELP)] = "smoke",
    order: Annotated[str, typer.Option(help="release (the registry's generation year) | given")] = "release",
    sigma: float = 0.25,
    seed: int = 0,
    dataset: Optional[str] = None,
    epochs: Optional[int] = None,
    train_limit: Optional[int] = None,
    executor: Annotated[str, typer.Option(help="local (subprocesses) | slurm | debug (in-process) | inline (in-process, no submitit)")] = "local",
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    results: ResultsOpt = Path("results"),
) -> None:
    """Recursive CRT: each --arch is distilled from the previous one's student; resumable link by link."""
    from crt_bench.analysis.chains import chain_table
    from crt_bench.core.checks import check_sigma
    from crt_bench.core.signals import exit_when_stopped
    from crt_bench.grid.chain import ChainSpec, run_chain
    from crt_bench.grid.executors import make_executor
    from crt_bench.report.chains import chain_markdown

    _check_inputs(profile=profile, device=None if executor == "slurm" else device)
    check_sigma(sigma)
    spec = ChainSpec(root=teacher, archs=tuple(arch), profile=profile, sigma=sigma, seed=seed, order=order,
                     dataset=dataset, data_dir=data_dir, epochs=epochs, train_limit=train_limit, device=device)
    _banner(profile, f"chain {spec.chain_name}: {teacher} -> " + " -> ".join(spec.ordered_archs()),
            device=device if executor != "slurm" else "auto")
    with exit_when_stopped():
        status = run_chain(spec, results, make_executor(executor, results / "submitit"))
    from crt_bench.store.chains import saved_chains
    from crt_bench.store.store import ResultsStore

    saved = next(c for c in saved_chains(results) if c["name"] == spec.chain_name)
    out.print(chain_markdown(chain_table(ResultsStore(results), saved)), markup=False, highlight=False)
    failed = status[~status["state"].isin(["finished", "skipped (finished)"])]
    if not failed.empty:
        raise CrtBenchError(f"{len(failed)} link(s) did not finish: " + "; ".join(
            f"{r.key}: {r.state} {r.error}".strip() for r in failed.itertuples()) + "; re-run to continue")


@app.command("time")
def time_cmd(
    profile: Annotated[str, typer.Option(help=f"probe size: {' | '.join(PROBES)}")] = "cpu",
    method: Annotated[list[str], typer.Option("--method", help="methods to time (repeatable; default: all)")] = [],
    arch: Annotated[list[str], typer.Option("--arch", help="architectures (repeatable; default: the generation "
                                                          "registry plus resnet20/resnet110)")] = [],
    teacher: Annotated[list[str], typer.Option("--teacher", help="CRT teacher archs")] = ["resnet110", "resnet20"],
    sigma: float = 0.25,
    batches: Annotated[Optional[int], typer.Option(help="timed loader batches per repeat")] = None,
    repeats: Optional[int] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="default: the profile's (paper: each recipe's)")] = None,
    force: Annotated[bool, typer.Option(help="re-time probes already in the store")] = False,
    device: DeviceOpt = "auto",
    results: ResultsOpt = Path("results"),
) -> None:
    """Timing probes per method x architecture; projected epoch and recipe hours go to the timing table."""
    from crt_bench.core.checks import check_sigma
    from crt_bench.timing.grid import probe_config, run_timing_grid

    probe_config(profile)  # a profile without probe sizes, or an unknown one
    _check_inputs(device=device)
    check_sigma(sigma)
    _banner(profile, "timing probes: methods x architectures at the methods' paper hyper-parameters", device=device)
    df = run_timing_grid(results, profile=profile, methods=method, archs=arch, teachers=teacher, sigma=sigma,
                         batches=batches, repeats=repeats, batch_size=batch_size, force=force, device=device)
    err.print(f"{len(df)} timing rows in {results}/tables/timing")


@app.command()
def plot(
    results_dir: Annotated[Path, typer.Argument(help="results directory")] = Path("results"),
    out_dir: Annotated[Path, typer.Option("--out", help="where tables and figures go")] = Path("plots"),
    sigma: float = 0.25,
) -> None:
    """Every table and figure of the paper from a results directory, plus REPORT.md."""
    from crt_bench.report.build import build_all

    if not results_dir.is_dir():
        raise CrtBenchError(f"results directory {results_dir} does not exist")
    written = build_all(results_dir, out_dir, sigma=sigma)
    if not written:
        raise CrtBenchError(f"nothing to plot in {results_dir}: no timing, training or certification results yet")
    slowdown = out_dir / "slowdown.md"
    if slowdown.is_file():
        out.print(slowdown.read_text(), markup=False, highlight=False)


@app.command("proxy")
def proxy_cmd(
    student_arch: Annotated[str, typer.Option(help="the CRT student")] = "resnet110",
    teacher_arch: Annotated[str, typer.Option(help="the small proxy teacher")] = "resnet20",
    teacher_method: Annotated[str, typer.Option(help="certified training method of the proxy teacher")] = "smoothmix",
    profile: Annotated[str, typer.Option(help=PROFILE_HELP)] = "smoke",
    dataset: Annotated[Optional[str], typer.Option(help="default: the profile's")] = None,
    sigma: float = 0.25,
    epochs: Annotated[Optional[int], typer.Option(help="override both runs' epochs")] = None,
    seed: int = 0,
    set_: Annotated[list[str], typer.Option("--set", help="teacher hyper-parameter KEY=VALUE (repeatable)")] = [],
    certify: Annotated[bool, typer.Option(help="certify the student with the profile's settings")] = True,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    progress: bool = True,
    results: ResultsOpt = Path("results"),
) -> None:
    """Table 1's recipe: train a proxy teacher (SmoothMix ResNet-20), then a CRT student linked to it.

    The student's total cost includes the teacher's hours. The last line of stdout is the student's run id.
    """
    from crt_bench.certify.resumable import certify_run
    from crt_bench.config.profiles import get_profile
    from crt_bench.core.checks import check_sigma
    from crt_bench.grid.proxy import proxy_teacher_workflow
    from crt_bench.store.store import ResultsStore

    _check_inputs(profile=profile, device=device)
    check_sigma(sigma)
    _banner(profile, f"proxy-teacher workflow: {teacher_method} {teacher_arch} (teacher) -> crt {student_arch}",
            device=device)
    teacher, student = proxy_teacher_workflow(
        results, student_arch=student_arch, teacher_arch=teacher_arch, teacher_method=teacher_method,
        profile=profile, sigma=sigma, seed=seed, dataset=dataset, data_dir=data_dir, device=device,
        teacher_hparams=_parse_sets(set_), epochs=epochs, progress=progress)
    store = ResultsStore(results)
    if certify:
        certify_run(student, store, get_profile(profile).certify, data_dir=data_dir, device=device, seed=seed,
                    progress=progress)
    t_row, s_row = store.get_run(teacher), store.get_run(student)
    err.print(f"teacher {teacher}: {t_row['train_seconds'] / 3600:.4f} h\n"
              f"student {student}: {s_row['train_seconds'] / 3600:.4f} h\n"
              f"total cost of the robust {student_arch}: {s_row['total_train_seconds'] / 3600:.4f} h")
    print(teacher)
    print(student)


@app.command()
def reproduce(
    profile: Annotated[str, typer.Option(help=f"auto (paper on a GPU, cpu otherwise) | {' | '.join(PLANS)}")] = "auto",
    executor: Annotated[str, typer.Option(help="local | slurm | debug | inline (see crt-bench sweep)")] = "local",
    max_parallel: int = 1,
    nproc: Annotated[int, typer.Option(help="processes (ranks) per job: data-parallel training of each run")] = 1,
    data_dir: DataDirOpt = None,
    install_data: Annotated[bool, typer.Option(
        "--install-data/--no-install-data",
        help="obtain a missing dataset: Debian's package via apt-get (as root), else torchvision's download")] = True,
    out_dir: Annotated[Path, typer.Option("--out", help="where tables, figures and REPORT.md go")] = Path("plots"),
    device: Annotated[str, typer.Option(help="where every job and probe runs: auto, cpu, cuda, cuda:N")] = "auto",
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

    _check_inputs(device=device)
    plan = plan_for(auto_profile(device) if profile == "auto" else profile, data_dir).on_device(device)
    _banner(plan.profile, plan.describe(), device=device)
    from crt_bench.core.signals import exit_when_stopped

    with exit_when_stopped():
        run_reproduce(plan, results, out_dir, executor=executor, max_parallel=max_parallel,
                      install_data=install_data, nproc=nproc)
    df = summary_table(ResultsStore(results))
    if not df.empty:
        out.print(rich_summary(df))
    err.print(f"report: {out_dir / 'REPORT.md'}")


def _method_defaults_table(name: str) -> Table:
    """A method's paper defaults (per sigma where the paper varies them) and its recipe."""
    import dataclasses

    from crt_bench.methods.registry import get_method

    spec = get_method(name)
    r = spec.recipe
    per_sigma = hasattr(spec.hparams, "for_sigma")
    sigmas = (0.25, 0.5, 1.0) if per_sigma else (None,)
    table = Table(title=f"{name}: hyper-parameters (override with --set KEY=VALUE)",
                  caption=f"recipe: {r.epochs} epochs, batch {r.batch_size}, lr {r.lr} x{r.gamma} at epochs "
                          f"{list(r.milestones)} (0-based), momentum {r.momentum}, weight decay {r.weight_decay}; "
                          f"{r.source}\n{spec.reference}")
    table.add_column("hyper-parameter")
    for sigma in sigmas:
        table.add_column("default" if sigma is None else f"sigma={sigma}")
    hps = [dataclasses.asdict(spec.make_hparams(sigma=sigma)) for sigma in sigmas]
    for key in hps[0]:
        table.add_row(key, *[str(hp[key]) for hp in hps])
    return table


def _print_method_help(args: list[str]) -> None:
    """`crt-bench run --method M --help` shows M's defaults before the generic option list."""
    if not args or args[0] != "run" or not ({"--help", "-h"} & set(args)):
        return
    method = None
    for i, arg in enumerate(args):
        if arg == "--method" and i + 1 < len(args):
            method = args[i + 1]
        elif arg.startswith("--method="):
            method = arg.split("=", 1)[1]
    if method:
        out.print(_method_defaults_table(method))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and exit status 2."""
    try:
        _print_method_help(sys.argv[1:] if argv is None else argv)
        app(args=argv, prog_name="crt-bench")
    except CrtBenchError as e:
        # One line however long (soft_wrap, line breaks joined); escape: the message is text, not rich markup.
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt as stop:
        from crt_bench.core.signals import exit_status

        if getattr(stop, "reported", False):  # the run or certification already said how to continue
            sys.exit(exit_status(stop))
        err.print("interrupted; finished epochs are checkpointed (resume with `crt-bench run --resume RUN_ID`)")
        sys.exit(130)


if __name__ == "__main__":
    main()
