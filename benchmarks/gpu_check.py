"""The measurements of the prepared GPU check (``benchmarks/gpu_check.sh``, which says what it runs).

Subcommands, each run by the script under its own timeout, each writing its rows to ``WORK/<name>.csv``
after every measurement (a step killed by its timeout keeps what it measured):

    certify   Smooth.certify_many of an untrained CIFAR-shaped model (32x32x3, 10 classes) in fp32, TF32,
              bf16 and compiled bf16: noisy forwards/s, peak memory, seconds per image at N = 100,000 and
              the GPU-hours of the 10,000-image CIFAR-10 test set. Each variant is warmed up first on the
              batch shapes the timed call will see (BatchNorm folding, cuDNN autotuning, compilation: the
              warm-up seconds are reported apart, never inside the timed figure).
    train     one training step of every registered method at its recipe batch size, per architecture,
              interleaved (crt_bench.timing.rounds): seconds per loader batch, peak memory, the per-step
              and recipe-projected slowdown vs Gaussian beside the paper's whole-run ratios.
    paper     the slowdown table's methods in the paper protocol on ResNet-110, fp32, at most 5 minutes
              (benchmarks/gpu_check_paper.py): whole epochs, MACER's and SmoothAdv's batches projected.
    reproduce the CPU mode's reproduce: the same ``crt-bench reproduce`` command line as the GPU mode's,
              run in-process with the plan shrunk to a minute (the GPU mode runs the CLI itself).
    summary   summary.md and measurements.csv in OUT from the steps' exit codes, logs and rows
              (benchmarks/gpu_check_summary.py).

``--mode gpu`` measures at the paper's sizes on a CUDA device; ``--mode cpu`` runs the same code at tiny
sizes (the test suite's check that the script works).
"""
from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import torch

N_PAPER = 100_000  # CERTIFY's estimation samples in the papers
N0_PAPER = 100
ALPHA = 0.001
SIGMA = 0.25
TEST_IMAGES = 10_000  # the CIFAR-10 test set
NUM_CLASSES = 10
VARIANTS = (("fp32", False), ("tf32", False), ("bf16", False), ("bf16", True))  # (precision, compiled)


@dataclass(frozen=True)
class Sizes:
    """What one mode measures."""

    cert_arch: str
    cert_images: int
    cert_n0: int
    cert_n: int
    compile: bool  # time the compiled variant (minutes of compilation on a 2-core CPU: GPU mode only)
    train_archs: tuple[str, ...]
    teacher: str  # CRT's teacher
    batch_size: int | None  # None: each method's recipe batch size
    warmup: int
    batches: int  # timed loader batches per round
    rounds: int


SIZES = {
    "gpu": Sizes(cert_arch="resnet110", cert_images=2, cert_n0=N0_PAPER, cert_n=N_PAPER, compile=True,
                 train_archs=("resnet110", "convnext_atto"), teacher="resnet110", batch_size=None,
                 warmup=2, batches=5, rounds=3),
    "cpu": Sizes(cert_arch="resnet20", cert_images=1, cert_n0=20, cert_n=200, compile=False,
                 train_archs=("tiny_cnn",), teacher="resnet20", batch_size=4,
                 warmup=1, batches=1, rounds=2),
}


def device_for(mode: str) -> torch.device:
    from crt_bench.core.provenance import pick_device

    return pick_device("cuda" if mode == "gpu" else "cpu")


# -- TF32: what torch does by default, and what a measurement's forward pass actually ran with ---------


def tf32_now() -> dict[str, str]:
    """TF32 of CUDA float32 convolutions and matmuls as the process is set now, read by crt_bench's one
    reader (:func:`crt_bench.core.tf32.read`: torch's new and legacy switches must not be mixed)."""
    from crt_bench.core.tf32 import read

    state = read()
    return {"tf32_conv": "on" if state.conv else "off", "tf32_matmul": "on" if state.matmul else "off"}


@contextmanager
def first_forward_tf32(seen: dict[str, str]) -> Iterator[None]:
    """Fill ``seen`` with :func:`tf32_now` at the next module forward in this process, then stop looking
    (the hook removes itself, so nothing it adds reaches a timed region)."""
    tf32_now()  # fails here, not inside a forward, where crt_bench cannot read TF32
    handle = None

    def hook(module: torch.nn.Module, args: tuple) -> None:
        if not seen:
            seen.update(tf32_now())
        try:
            handle.remove()
        except KeyError:  # CPU certification's worker threads: another one removed it first
            pass

    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def peak_memory(device: torch.device) -> int:
    return torch.cuda.max_memory_allocated(device) if device.type == "cuda" else -1


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def write_rows(rows: list[dict], path: Path) -> None:
    """All rows so far, replacing the file (atomically: a kill mid-write leaves the previous rows)."""
    tmp = path.with_suffix(".tmp")
    pd.DataFrame(rows).to_csv(tmp, index=False)
    tmp.replace(path)


def guarded(rows: list[dict], base: dict, measure: Callable[[], dict]) -> bool:
    """``rows += base | measure()``; a failure becomes a row with its error (traceback to the log)."""
    try:
        rows.append({**base, **measure(), "status": "ok"})
        return True
    except Exception as err:  # one variant's failure must not hide the others
        traceback.print_exc()
        rows.append({**base, "status": f"failed: {type(err).__name__}: {err}"})
        return False


# -- certification -----------------------------------------------------------------------------------


def even_batch(total: int, auto: int) -> int:
    """The largest divisor of ``total`` samples from ``auto`` (the engine's own choice) down to half of it,
    so that every forward batch has one shape and a compiled model compiles once; ``auto`` if none."""
    top = min(auto, total)
    for batch in range(top, max(top // 2, 1) - 1, -1):
        if total % batch == 0:
            return batch
    return auto


def warmup_n(n0: int, n: int, images: int, batch: int) -> int:
    """Estimation samples of a one-image warm-up whose forward batches have exactly the shapes of the
    timed call's (full batches and the same last, partial one): a compiled model then compiles before
    the clock starts."""
    rest = images * (n0 + n) % batch
    total = batch + rest
    while total - n0 < 1:
        total += batch
    return total - n0


def tf32_unavailable(device: torch.device) -> str | None:
    """Why the ``tf32`` precision cannot run on ``device`` (None: it can)."""
    if device.type != "cuda":
        return f"n/a on {device.type}"
    from crt_bench.core.tf32 import supports_tf32

    major, minor = torch.cuda.get_device_capability(device)
    return None if supports_tf32(device) else f"n/a: compute capability {major}.{minor}, TF32 needs 8.0 (Ampere)"


def certify_variant(model: torch.nn.Module, images: torch.Tensor, sizes: Sizes, precision: str,
                    compiled: bool) -> dict:
    from crt_bench.certify.smooth import Smooth
    from crt_bench.core.provenance import synchronize

    device = images.device
    smooth = Smooth(model, NUM_CLASSES, SIGMA, precision=precision, compile=compiled, noise_seed=0)
    start = time.perf_counter()
    # folds the batch norms; the batch size `certify` would use, evened out to a divisor of the samples
    batch = even_batch(len(images) * (sizes.cert_n0 + sizes.cert_n), smooth.auto_batch_size(images[0]))
    seen: dict[str, str] = {}
    with nullcontext() if compiled else first_forward_tf32(seen):  # dynamo would trace the hook
        smooth.certify_many(images[:1], sizes.cert_n0, warmup_n(sizes.cert_n0, sizes.cert_n, len(images), batch),
                            ALPHA, batch_size=batch, keys=[10**6])
    synchronize(device)
    warmup_seconds = time.perf_counter() - start
    reset_peak(device)
    start = time.perf_counter()
    smooth.certify_many(images, sizes.cert_n0, sizes.cert_n, ALPHA, batch_size=batch)
    synchronize(device)
    seconds = time.perf_counter() - start
    forwards_per_s = len(images) * (sizes.cert_n0 + sizes.cert_n) / seconds
    per_image = (N0_PAPER + N_PAPER) / forwards_per_s  # linear in N: the same batches, N/batch times
    return {"batch_size": batch, "seconds": seconds, "noisy_forwards_per_s": forwards_per_s,
            "seconds_per_image_n100k": per_image, "scaled_from_n": sizes.cert_n != N_PAPER,
            "device_hours_test_set": per_image * TEST_IMAGES / 3600, "warmup_seconds": warmup_seconds,
            "peak_memory_bytes": peak_memory(device), "folded_batchnorms": smooth.folded_batchnorms,
            **({f"{k}_used": v for k, v in seen.items()} or {"tf32_conv_used": "not observed (compiled)"})}


def run_certify(mode: str, work: Path) -> int:
    from crt_bench.models.build import build_model

    sizes, device = SIZES[mode], device_for(mode)
    torch.manual_seed(0)
    model = build_model(sizes.cert_arch, num_classes=NUM_CLASSES, in_chans=3, mean=[0.5] * 3,
                        std=[0.25] * 3).to(device).eval()
    images = torch.rand(sizes.cert_images, 3, 32, 32, device=device)
    rows: list[dict] = []
    failures = 0
    for precision, compiled in VARIANTS:
        variant = precision + ("+compile" if compiled else "")
        base = {"stage": "certify", "arch": sizes.cert_arch, "variant": variant, "precision": precision,
                "compile": compiled, "images": sizes.cert_images, "n0": sizes.cert_n0, "n": sizes.cert_n}
        skip = tf32_unavailable(device) if precision == "tf32" else None
        if compiled and not sizes.compile:
            skip = f"skipped in {mode} mode (compilation takes minutes on a CPU)"
        if skip:
            rows.append({**base, "status": skip})
        else:
            print(f"certify {sizes.cert_arch} {variant}: {sizes.cert_images} images at N={sizes.cert_n}", flush=True)
            failures += not guarded(rows, base, lambda: certify_variant(model, images, sizes, precision, compiled))
            print(f"  {rows[-1]}", flush=True)
        reset_peak(device)
        write_rows(rows, work / "certify.csv")
    return 1 if failures else 0


# -- training steps ----------------------------------------------------------------------------------


def train_rows(arch: str, sizes: Sizes, device: torch.device) -> list[dict]:
    """Every method on ``arch``, interleaved; per-step and recipe-projected ratios to Gaussian."""
    from crt_bench.methods.registry import get_method, list_methods
    from crt_bench.report.slowdown import PAPER_SLOWDOWN
    from crt_bench.timing.grid import grid
    from crt_bench.timing.probe import ProbeConfig
    from crt_bench.timing.rounds import interleaved_rows

    jobs = [(m, t) for m, _, t in grid([m.name for m in list_methods()], [arch], [sizes.teacher])]
    jobs.sort(key=lambda job: job[0] != "gaussian")  # Gaussian's warm-up is the first forward: TF32 seen there
    cfg = ProbeConfig(batches=sizes.batches, warmup=sizes.warmup, repeats=sizes.rounds, batch_size=sizes.batch_size)
    seen: dict[str, str] = {}
    reset_peak(device)
    with first_forward_tf32(seen):
        rows = interleaved_rows(arch, jobs, sigma=SIGMA, cfg=cfg, rounds=sizes.rounds, device=device)
    gaussian_epochs = get_method("gaussian").recipe.epochs
    out = []
    for row in rows:
        per_recipe = row["recipe_epochs"] / gaussian_epochs
        teacher = f" <- {row['teacher_arch']}" if row["teacher_arch"] else ""
        out.append({"stage": "train", "variant": row["method"] + teacher, **row,
                    "recipe_ratio": row["epoch_ratio"] * per_recipe,
                    "recipe_ratio_low": row["epoch_ratio_low"] * per_recipe,
                    "recipe_ratio_high": row["epoch_ratio_high"] * per_recipe,
                    "paper_ratio_resnet110": PAPER_SLOWDOWN.get(row["method"], float("nan")),
                    **{f"{k}_used": v for k, v in seen.items()}, "status": "ok"})
    return out


def run_train(mode: str, work: Path) -> int:
    sizes, device = SIZES[mode], device_for(mode)
    torch.manual_seed(0)
    rows: list[dict] = []
    failures = 0
    for arch in sizes.train_archs:
        print(f"train: every method on {arch}, {sizes.rounds} interleaved rounds of {sizes.batches} batches", flush=True)
        try:
            rows += train_rows(arch, sizes, device)
        except Exception as err:  # the next architecture still runs
            traceback.print_exc()
            failures += 1
            rows.append({"stage": "train", "arch": arch, "status": f"failed: {type(err).__name__}: {err}"})
        reset_peak(device)
        write_rows(rows, work / "train.csv")
        print(f"  {arch}: {len(rows)} rows so far", flush=True)
    return 1 if failures else 0


# -- the CPU mode's reproduce --------------------------------------------------------------------------


def run_tiny_reproduce(argv: list[str]) -> int:
    """``crt-bench ARGV`` (a reproduce) in this process with the plan shrunk to a minute on a CPU, as
    tests/test_gpu_smoke.py does: tiny_cnn as the teacher, the students and the probed architecture and
    teacher, 256 training images; probes at batch 4, CERTIFY at N = 32 on 2 images. Every run keeps its
    recipe's batch size and the profile's other settings. ARGV must name an in-process executor (inline),
    so that the jobs and the probes see the smaller sizes."""
    from crt_bench.cli import app as cli
    from crt_bench.config import profiles
    from crt_bench.grid import reproduce
    from crt_bench.timing import probe as timing

    profile = argv[argv.index("--profile") + 1]
    real_plan = reproduce.plan_for

    def tiny(name: str, data_dir: str | None = None) -> reproduce.Plan:
        return real_plan(name, data_dir).on_arch("tiny_cnn", train_limit=256)

    reproduce.plan_for = tiny
    timing.PROBES[profile] = replace(timing.PROBES[profile], batch_size=4, batches=1)
    p = profiles.get_profile(profile)
    profiles.PROFILES[profile] = replace(p, certify=replace(p.certify, n=32, subset="range:0:2"))
    try:
        cli.main(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("step", choices=["certify", "train", "paper", "reproduce", "summary"])
    parser.add_argument("--mode", choices=sorted(SIZES), default="gpu")
    parser.add_argument("--work", type=Path, required=True, help="the check's scratch folder (rows, step status)")
    parser.add_argument("--out", type=Path, help="summary: the check's output folder")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)  # reproduce: the crt-bench command after --
    args, command = parser.parse_args(argv[:split]), argv[split + 1:]
    args.work.mkdir(parents=True, exist_ok=True)
    if args.step == "certify":
        return run_certify(args.mode, args.work)
    if args.step == "train":
        return run_train(args.mode, args.work)
    if args.step == "paper":
        from gpu_check_paper import run_paper

        return run_paper(args.mode, args.work, write_rows)
    if args.step == "reproduce":
        return run_tiny_reproduce(command)
    from gpu_check_summary import write_summary

    write_summary(args.mode, args.work, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
