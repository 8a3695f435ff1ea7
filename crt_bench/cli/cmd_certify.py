"""Commands about certifications: ``certify``, ``recertify``, ``import-log``, ``export-log``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Optional

import typer

from crt_bench.cli.options import (ArrayParallelismOpt, CpusPerTaskOpt, DataDirOpt, DatasetName, DeviceOpt, GpusOpt,
                                   MemOpt, PartitionOpt, ResultsOpt, ResultsReadOpt, SlurmOptOpt,
                                   check_inputs, names_enum, slurm_options)
from crt_bench.cli.output import info
from crt_bench.config.choices import InputLayer, Precision
from crt_bench.core.errors import CrtBenchError

log = logging.getLogger("crt_bench.cli")
ShardExecutor = names_enum("ShardExecutor", ("local", "slurm"))


def certify(
    run_id: Annotated[str, typer.Argument(help="run id or model checkpoint path")],
    n0: Annotated[Optional[int], typer.Option("--n0", min=1, help="selection samples (default: profile's)")] = None,
    n: Annotated[Optional[int], typer.Option(
        "--n", "--num-samples", min=1, help="estimation samples (default: profile's); under torchrun write --num-samples "
        "(torchrun's parser takes --n for an abbreviation of its own options)")] = None,
    alpha: Annotated[Optional[float], typer.Option(help="failure probability")] = None,
    batch: Annotated[Optional[int], typer.Option(min=1, help="noisy samples per forward pass (default: chosen)")] = None,
    precision: Annotated[Optional[Precision], typer.Option(
        help="base classifier forward; tf32: Ampere+ GPUs (noise stays float32; recorded)")] = None,
    compile: Annotated[Optional[bool], typer.Option("--compile/--no-compile", help="torch.compile the model")] = None,
    subset: Annotated[Optional[str], typer.Option(help="all | skip:K | range:A:B[:K]")] = None,
    sigma: Annotated[Optional[float], typer.Option(help="smoothing noise (default: the run's)")] = None,
    input_layer: Annotated[InputLayer, typer.Option(
        help="reference checkpoints only: normalize (Cohen, Jeong) or center (Salman)")] = "normalize",
    seed: int = 0,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    progress: bool = True,
    flush_every: Annotated[int, typer.Option(
        min=1, help="append the certified rows every this many images (a kill loses at most these)")] = 64,
    shards: Annotated[int, typer.Option(
        min=1, help="split the images over this many processes (local ones, one GPU each; under torchrun: the ranks)")] = 1,
    shard: Annotated[Optional[int], typer.Option(
        min=0, help="certify only shard I of --shards (a SLURM array task); default under torchrun: RANK of WORLD_SIZE")] = None,
    executor: Annotated[ShardExecutor, typer.Option(
        help="where the --shards run: local processes, or slurm: one array job, a task per shard")] = "local",
    partition: PartitionOpt = None,
    gpus: GpusOpt = None,
    time_min: Annotated[Optional[int], typer.Option(min=1, help="slurm: time limit per shard, minutes (default "
                                                                 "1440)")] = None,
    cpus_per_task: CpusPerTaskOpt = None,
    mem: MemOpt = None,
    slurm_opt: SlurmOptOpt = [],
    array_parallelism: ArrayParallelismOpt = None,
    transfer_from: Annotated[Optional[str], typer.Option(
        help="certify by transfer (incremental smoothing) from this finished certification of a teacher "
             "(cert id) on the same images, sigma, subset and seed")] = None,
    transfer_n: Annotated[Optional[int], typer.Option(
        help="with --transfer-from: disagreement samples n_p per image (default: the teacher's N / 10)")] = None,
    transfer_alpha: Annotated[Optional[float], typer.Option(
        help="with --transfer-from: alpha_zeta of the disagreement bound (default: the teacher's alpha)")] = None,
    results: ResultsOpt = Path("results"),
) -> None:
    """CERTIFY (Cohen et al.) every selected test image; one row per image in the certify table.

    Resumable: the same command again continues where an interrupted one stopped (same rows).
    Sharded (--shards K): the parts are one certification with the rows of an unsharded run; --executor slurm
    submits them as one SLURM array job and waits for it.
    --transfer-from CERT: certify by transferring CERT's certificates (Ugare et al. 2024), resumable too.
    """
    from dataclasses import replace

    from crt_bench.analysis.summary import summary_table
    from crt_bench.certify.resumable import certify_run
    from crt_bench.cli.render import rich_summary
    from crt_bench.config.certify import CertifyConfig
    from crt_bench.config.profiles import get_profile
    from crt_bench.store.store import ResultsStore

    executor = getattr(executor, "value", executor)
    on_slurm = executor == "slurm"
    if time_min is not None and not on_slurm:
        raise CrtBenchError("--time-min is a SLURM option: it needs --executor slurm (local shards run on this machine)")
    slurm = slurm_options(executor, partition=partition, gpus=gpus, time_min=time_min or 24 * 60,
                          cpus_per_task=cpus_per_task, mem=mem, slurm_opt=slurm_opt, array_parallelism=array_parallelism)
    if on_slurm and shard is not None:
        raise CrtBenchError("--shard I certifies one shard here (what a SLURM array task runs); with --executor slurm "
                            "crt-bench submits the array itself: drop --shard")
    check_inputs(device=None if on_slurm else device)  # on SLURM the device is the compute nodes'
    store = ResultsStore(results)
    if sigma is not None:
        from crt_bench.core.checks import check_sigma

        check_sigma(sigma)
    profile = run_profile(store, run_id)
    from crt_bench.core.provenance import pick_device

    transferring = transfer_from is not None or transfer_n is not None or transfer_alpha is not None
    if on_slurm and not transferring:  # the settings for where the shards run: GPUs if their jobs get any
        from crt_bench.grid.slurm import job_gpus

        slurm["gpus"] = job_gpus(gpus, device=device, profile=profile, partition=partition)
        where = "cuda" if slurm["gpus"] else "cpu"
    else:
        where = "cpu" if on_slurm else pick_device(device).type  # (a transfer with --executor slurm is refused)
    base = get_profile(profile).certify.on(where) if profile else CertifyConfig()
    overrides = {k: v for k, v in dict(n0=n0, n=n, alpha=alpha, batch=batch, subset=subset, precision=precision,
                                        compile=compile).items() if v is not None}
    if transferring:
        used = [flag for flag, value in (("--n0", n0), ("--n", n), ("--alpha", alpha), ("--shard", shard))
                if value is not None] + (["--shards"] if shards > 1 else []) + (["--executor slurm"] if on_slurm else [])
        _transfer(store, run_id, transfer_from, transfer_n, transfer_alpha, used, replace(base, **overrides),
                  sigma=sigma, seed=seed, data_dir=data_dir, device=device, progress=progress,
                  input_layer=input_layer, flush_every=flush_every)
        return
    ccfg = replace(base, **overrides)
    ccfg.validate()
    from crt_bench.certify.precision import uses_tf32

    if uses_tf32(ccfg.precision) and not on_slurm:  # before any shard starts
        check_inputs(device=device, tf32_flag="--precision tf32")
    log.info(f"certify {run_id}: N0={ccfg.n0} N={ccfg.n} alpha={ccfg.alpha} batch={ccfg.batch or 'auto'} "
              f"subset={ccfg.subset} precision={ccfg.precision}{' compiled' if ccfg.compile else ''}")
    from crt_bench.certify.shards import ShardSpec, launch_local, shard_from_env
    from crt_bench.core.signals import stop_on_signals
    from crt_bench.parallel.env import barrier_if_distributed, env_from, rank_device

    ranks = env_from()
    one = ShardSpec(shard, shards) if shard is not None else shard_from_env(ranks)
    if on_slurm and one is not None:
        raise CrtBenchError("--executor slurm submits the shards as a SLURM array; under torchrun the ranks are the "
                            "shards: drop --executor slurm")
    device = str(rank_device(device, ranks)) if one is not None and shard is None else device
    if on_slurm:  # one array job, a task per shard; then the unsharded pass here closes it
        from crt_bench.grid.certify_array import certify_on_slurm
        from crt_bench.grid.executors import make_executor

        ex = make_executor("slurm", results / "submitit", device=device, profile=profile, **slurm)
        log.info(f"certify {run_id}: {shards} shard(s) as one SLURM array job")
        certify_on_slurm(run_id, str(results), ccfg, shards, ex, options=dict(
            sigma=sigma, data_dir=data_dir, device=device, seed=seed, input_layer=input_layer,
            flush_images=flush_every))
        device = "cpu"  # the closing pass certifies nothing: every image is done
    elif one is None and shards > 1:  # the local launcher: K children, then the unsharded pass closes it
        child_args = [run_id, "--n0", str(ccfg.n0), "--n", str(ccfg.n), "--alpha", str(ccfg.alpha),
                      "--subset", ccfg.subset, "--precision", ccfg.precision, "--seed", str(seed),
                      "--input-layer", input_layer, "--device", device, "--no-progress",
                      "--flush-every", str(flush_every), "--results", str(results),
                      "--compile" if ccfg.compile else "--no-compile",
                      *(["--batch", str(ccfg.batch)] if ccfg.batch else []),
                      *(["--sigma", str(sigma)] if sigma is not None else []),
                      *(["--data-dir", data_dir] if data_dir else [])]
        log.info(f"certify {run_id}: {shards} shard processes")
        launch_local(child_args, shards)
    with stop_on_signals("stopped; run the same `crt-bench certify` command again to continue"):
        cert_id, _ = certify_run(run_id, store, ccfg, sigma=sigma, data_dir=data_dir, device=device, seed=seed,
                                 progress=progress, input_layer=input_layer, flush_images=flush_every, shard=one)
    if one is not None:
        if not (shard is None and barrier_if_distributed(ranks)):  # a lone shard, or a torchrun rank other than 0
            print(cert_id)
            return
        cert_id, _ = certify_run(run_id, store, ccfg, sigma=sigma, data_dir=data_dir, device=device, seed=seed,
                                 progress=False, input_layer=input_layer, flush_images=flush_every)
    df = summary_table(store)
    info(rich_summary(df[df["cert_id"] == cert_id]))
    print(cert_id)


def _transfer(store: "ResultsStore", run_id: str, transfer_from: str | None, n_p: int | None,  # noqa: F821
              alpha_zeta: float | None, used: list[str], ccfg: "CertifyConfig", **kwargs: object) -> None:  # noqa: F821
    """``certify --transfer-from``: refusals first (one line each), then the resumable transfer."""
    from crt_bench.analysis.summary import summary_table
    from crt_bench.certify.transfer_run import TransferConfig, transfer_run
    from crt_bench.cli.render import rich_summary
    from crt_bench.core.errors import CrtBenchError
    from crt_bench.core.signals import stop_on_signals

    if transfer_from is None:
        raise CrtBenchError("--transfer-n and --transfer-alpha go with --transfer-from CERT")
    if used:
        raise CrtBenchError(f"--transfer-from takes no {', '.join(used)} (N0, N and alpha are the teacher "
                            "certification's; a transfer runs in one process)")
    tcfg = TransferConfig(n_p=n_p, alpha_zeta=alpha_zeta, batch=ccfg.batch, precision=ccfg.precision,
                          compile=ccfg.compile, subset=ccfg.subset)
    flush_every = kwargs.pop("flush_every")
    with stop_on_signals("stopped; run the same `crt-bench certify` command again to continue"):
        cert_id, _ = transfer_run(run_id, store, transfer_from, tcfg, flush_images=flush_every, **kwargs)
    df = summary_table(store)
    info(rich_summary(df[df["cert_id"] == cert_id]))
    print(cert_id)


def run_profile(store: "ResultsStore", run_id: str) -> str | None:  # noqa: F821
    config = store.run_dir(run_id) / "config.json"
    if config.is_file():
        from crt_bench.config.run import RunConfig

        return RunConfig.from_json(config.read_text()).profile
    return None


def import_log_cmd(
    file: Annotated[Path, typer.Argument(help="Cohen-format TSV certify log")],
    name: Annotated[str, typer.Option(help="name of the imported certification")],
    sigma: Annotated[Optional[float], typer.Option(help="the log's smoothing sigma, if known")] = None,
    n0: Annotated[int, typer.Option(min=1)] = 100,
    n: Annotated[int, typer.Option("--n", min=1)] = 100_000,
    alpha: float = 0.001,
    hours: Annotated[Optional[float], typer.Option(help="leaderboard: the model's reported training hours")] = None,
    method: Annotated[Optional[str], typer.Option(help="leaderboard: how the model was trained (any name)")] = None,
    arch: Annotated[Optional[str], typer.Option(help="leaderboard: the model's architecture (any name)")] = None,
    teacher: Annotated[Optional[str], typer.Option(help="leaderboard: CRT's teacher, e.g. 'smoothmix resnet110'")] = None,
    dataset: Annotated[Optional[DatasetName], typer.Option(help="leaderboard: the dataset certified")] = None,
    device: Annotated[Optional[str], typer.Option("--device", help="leaderboard: the device that trained it")] = None,
    results: ResultsOpt = Path("results"),
) -> None:
    """Store a published certification log so it appears in summaries, figures and the leaderboard."""
    from crt_bench.core.checks import check_positive
    from crt_bench.store.imports import import_log, record_import_meta
    from crt_bench.store.store import ResultsStore

    if hours is not None:
        check_positive("--hours (training hours)", hours)
    rows = import_log(file, name, ResultsStore(results), sigma=sigma, n0=n0, n=n, alpha=alpha)
    record_import_meta(results, name, hours=hours, method=method, arch=arch, teacher=teacher, dataset=dataset,
                       device=device)
    log.info(f"imported {len(rows)} rows from {file} as {name!r}")


def recertify_cmd(
    cert_id: Annotated[str, typer.Argument(help="a finished certification (cert id printed by crt-bench certify)")],
    alpha: Annotated[float, typer.Option(help="the failure probability to recompute its certificates at")],
    json_out: Annotated[bool, typer.Option("--json", help="the recomputed rows as JSON on stdout")] = False,
    results: ResultsReadOpt = Path("results"),
) -> None:
    """Recompute a certification at another alpha from its stored counts, without sampling (printed, not stored).

    Equal to a fresh certification with the same noise at that alpha; images whose sampling stopped early
    (exact early abstention) are decided at a stricter alpha and named, not guessed, at a looser one.
    """
    from crt_bench.analysis.metrics import summary_row
    from crt_bench.analysis.recertify import recertify
    from crt_bench.cli.output import out, print_json
    from crt_bench.store.store import ResultsStore

    done = recertify(ResultsStore(results), cert_id, alpha)
    if json_out:
        print_json(done.rows.to_dict("records"))
    else:
        head = f"{done.source} recertified at alpha={done.alpha:g} (certified at alpha={done.source_alpha:g})"
        if not done.rows.empty:
            summary = summary_row(done.rows)
            out.print(f"{head}: {summary['n_images']} images, " +
                      ", ".join(f"{k} {v:.3f}" for k, v in summary.items() if k != "n_images"), soft_wrap=True)
        else:
            out.print(f"{head}: no image decided", soft_wrap=True)
    if done.undecided:
        shown = ", ".join(map(str, done.undecided[:20])) + (" ..." if len(done.undecided) > 20 else "")
        log.warning(f"{len(done.undecided)} image(s) left out: exact early abstention stopped their sampling at "
                    f"alpha={done.source_alpha:g}, so their counts cannot decide the looser alpha={done.alpha:g} "
                    f"(idx {shown}); certify again at that alpha for them")


def export_log_cmd(
    cert_id: Annotated[str, typer.Argument(help="certification id (printed by crt-bench certify)")],
    file: Annotated[Path, typer.Argument(help="output TSV path")],
    results: ResultsReadOpt = Path("results"),
) -> None:
    """Write a certification as a Cohen-format TSV log (radius to 3 significant digits)."""
    from crt_bench.store.cohen_log import write_cohen_log
    from crt_bench.store.store import ResultsStore

    write_cohen_log(ResultsStore(results).certification_rows(cert_id), file)
    log.info(f"written {file}")
