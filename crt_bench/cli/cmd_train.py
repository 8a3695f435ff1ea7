"""Commands that train: ``run`` and ``proxy``."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from crt_bench.cli.options import (ARCH_METAVAR, ArchName, DataDirOpt, DatasetName, DeviceOpt, MethodName,
                                   ProfileOpt, ResultsOpt, check_inputs, parse_sets)
from crt_bench.cli.output import banner
from crt_bench.config.choices import InputLayer, TeacherPrecision

log = logging.getLogger("crt_bench.cli")


def run(
    method: Annotated[MethodName, typer.Option(help="training method (crt-bench list methods)")] = "gaussian",
    arch: Annotated[ArchName, typer.Option(
        metavar=ARCH_METAVAR, help="architecture or alias (crt-bench list archs)")] = "resnet20",
    profile: ProfileOpt = "smoke",
    dataset: Annotated[Optional[DatasetName], typer.Option(help="default: the profile's")] = None,
    sigma: Annotated[float, typer.Option(help="noise level in [0,1] pixel units")] = 0.25,
    teacher: Annotated[Optional[str], typer.Option(help="teacher run id or checkpoint path (crt; denoised: the classifier)")] = None,
    teacher_input_layer: Annotated[InputLayer, typer.Option(
        help="reference checkpoints only: normalize (Cohen, Jeong) or center (Salman's InputCenterLayer)")] = "normalize",
    epochs: Annotated[Optional[int], typer.Option(min=1, help="override the recipe/profile epochs")] = None,
    batch_size: Annotated[Optional[int], typer.Option(min=1, help="override the batch size")] = None,
    lr: Annotated[Optional[float], typer.Option(help="override the initial learning rate")] = None,
    seed: int = 0,
    set_: Annotated[list[str], typer.Option("--set", help="method hyper-parameter KEY=VALUE (repeatable)")] = [],
    train_limit: Annotated[Optional[int], typer.Option(min=1, help="use only this many training images")] = None,
    data_dir: DataDirOpt = None,
    device: DeviceOpt = "auto",
    resume: Annotated[Optional[str], typer.Option(help="continue this run id from its last checkpoint")] = None,
    channels_last: Annotated[Optional[bool], typer.Option(
        "--channels-last/--no-channels-last", help="NHWC student and batches (default: for conv nets)")] = None,
    compile: Annotated[bool, typer.Option("--compile/--no-compile", help="torch.compile the student")] = False,
    amp: Annotated[bool, typer.Option("--amp/--no-amp", help="bf16 autocast of the training step on CUDA and on CPUs with native bf16 (AVX512-BF16, AMX); --no-amp: float32")] = True,
    teacher_precision: Annotated[TeacherPrecision, typer.Option(
        help="CRT teacher forward: auto = bf16 where the device has native bf16")] = "auto",
    trace_steps: Annotated[int, typer.Option(
        "--trace-steps", "--profile-steps", min=0,
        help="record this many training steps with torch.profiler (in the run's trace/ folder)")] = 0,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
    nproc: Annotated[int, typer.Option(
        min=1, help="data-parallel processes on this machine: relaunches this command under torchrun (one GPU each)")] = 1,
    sync_bn: Annotated[bool, typer.Option(
        "--sync-bn/--no-sync-bn", help="data-parallel runs: batch norm over the global batch (CUDA)")] = False,
    tf32: Annotated[bool, typer.Option(
        "--tf32/--no-tf32", help="TF32 float32 matmuls and convolutions (Ampere+ GPUs; default off: IEEE fp32)")] = False,
    results: ResultsOpt = Path("results"),
) -> None:
    """Train one model; the last line of standard output is the new run's id.

    Several processes: `--nproc K`, or `torchrun --nproc_per_node K -m crt_bench.cli run ...` (any
    launcher that sets RANK/WORLD_SIZE); the recipe's batch is split over them (crt_bench.parallel.env).
    """
    import subprocess

    from crt_bench.parallel.env import env_from

    check_inputs(device=device, tf32_flag="--tf32" if tf32 else None)  # before torchrun children
    ranks = env_from()
    if nproc > 1 and not ranks.launched:
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
                                 teacher_input_layer=teacher_input_layer, hparams=parse_sets(set_),
                                 train_limit=train_limit, data_dir=data_dir, device=device, amp=amp,
                                 channels_last=channels_last, compile=compile, teacher_precision=teacher_precision,
                                 trace_steps=trace_steps, tf32=tf32)
        if sync_bn:
            from dataclasses import replace

            cfg = replace(cfg, sync_bn=True)
        banner(profile, f"run: {cfg.method} on {cfg.arch}, {cfg.dataset} "
                         f"({cfg.train_limit or 'all'} training images), sigma {cfg.sigma}, {cfg.epochs} epochs"
                         + (f" ({cfg.epoch_scale:g} x the recipe's {cfg.recipe_epochs})" if cfg.epoch_scale else "")
                         + f", batch {cfg.batch_size}, lr {cfg.lr} (x{cfg.gamma} at {list(cfg.milestones)}), seed {cfg.seed}"
                         + (f", teacher {cfg.teacher}" if cfg.teacher else ""), describe_profile=False, device=device)
        with stop_on_signals(hint):
            run_id = train_run(cfg, store, progress=progress)
    if ranks.is_main:  # one id on stdout, however many ranks share it
        print(run_id)


def proxy_cmd(
    student_arch: Annotated[ArchName, typer.Option(metavar=ARCH_METAVAR, help="the CRT student")] = "resnet110",
    teacher_arch: Annotated[ArchName, typer.Option(metavar=ARCH_METAVAR, help="the small proxy teacher")] = "resnet20",
    teacher_method: Annotated[MethodName, typer.Option(
        help="certified training method of the proxy teacher")] = "smoothmix",
    profile: ProfileOpt = "smoke",
    dataset: Annotated[Optional[DatasetName], typer.Option(help="default: the profile's")] = None,
    sigma: float = 0.25,
    epochs: Annotated[Optional[int], typer.Option(min=1, help="override both runs' epochs")] = None,
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

    check_inputs(device=device)
    check_sigma(sigma)
    banner(profile, f"proxy-teacher workflow: {teacher_method} {teacher_arch} (teacher) -> crt {student_arch}",
            device=device)
    teacher, student = proxy_teacher_workflow(
        results, student_arch=student_arch, teacher_arch=teacher_arch, teacher_method=teacher_method,
        profile=profile, sigma=sigma, seed=seed, dataset=dataset, data_dir=data_dir, device=device,
        teacher_hparams=parse_sets(set_), epochs=epochs, progress=progress)
    store = ResultsStore(results)
    if certify:
        from crt_bench.core.provenance import pick_device

        certify_run(student, store, get_profile(profile).certify.on(pick_device(device).type), data_dir=data_dir,
                    device=device, seed=seed, progress=progress)
    t_row, s_row = store.get_run(teacher), store.get_run(student)
    log.info(f"teacher {teacher}: {t_row['train_seconds'] / 3600:.4f} h\n"
              f"student {student}: {s_row['train_seconds'] / 3600:.4f} h\n"
              f"total cost of the robust {student_arch}: {s_row['total_train_seconds'] / 3600:.4f} h")
    print(teacher)
    print(student)
