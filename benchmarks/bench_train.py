"""Training-step speed of every method, reference design vs this engine's fast path, and their accuracy parity.

Speed: for each method (paper hyper-parameters at the given sigma; CRT with a ResNet-20 teacher) on
each student (ResNet-20 and the new-generation mobilenetv4_conv_small by default) the benchmark builds
the real training step (crt_bench.train.step.TrainStep, as the training loop runs it) once per engine
variant, runs the untimed warm-up steps (allocator, oneDNN kernels, the compiler of ``compile``), then
times one loader batch per variant round by round, interleaved in one process so that machine drift
(other jobs on the cores) hits all alike:

    plain    the reference design (the official code's step): NCHW, float32, the teacher as given
             (batch norm, float32, no_grad)
    fast     this engine's defaults: bf16 autocast where the device computes bf16 natively (CUDA,
             AVX512-BF16/AMX CPUs; crt_bench.core.bf16), channels-last conv nets, noise built in place,
             the teacher batch-norm-folded, NHWC, inference mode, bf16 where native
    fp32     fast without autocast (isolates bf16 from the memory format)
    compile  fast plus torch.compile of the student (compile time stays in the untimed warm-up)

Shape: Fashion-MNIST (1x28x28, 10 classes), batch 128: the cpu profile's training step.
It prints each variant's median seconds per loader batch, its min, and the speed-up over plain
(median over median, and min over min: on a shared machine the min is the least disturbed figure).

Parity: the same short Gaussian recipe (a ResNet-20 on a few thousand Fashion-MNIST training images,
a few epochs, the real training loop, crt_bench.train.trainer) once in float32 (``--no-amp``) and once on
the fast path; each run's final noisy test accuracy with its 95% Clopper-Pearson interval
(scipy.stats.binomtest). Both tables go to results/bench/ (train-*.parquet, train-parity-*.parquet).

    python benchmarks/bench_train.py            # quick: 3 rounds, parity on 3,000 images x 3 epochs (~5 min)
    python benchmarks/bench_train.py --full     # 5 rounds, parity on 10,000 images x 6 epochs
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from scipy.stats import binomtest

from crt_bench.train.resolve import resolve_run_config
from crt_bench.core.provenance import pick_device
from crt_bench.store.bench import write_bench_table
from crt_bench.store.store import ResultsStore
from crt_bench.timing.probe import PreparedProbe, ProbeConfig, prepare
from crt_bench.train.evaluate import EVAL_IMAGES
from crt_bench.train.trainer import train_run

METHODS = ("gaussian", "crt", "smoothmix", "consistency", "macer", "smoothadv")
ARCHS = ("resnet20", "mobilenetv4_conv_small")
VARIANTS: dict[str, dict] = {
    "plain": dict(amp=False, channels_last=False, teacher_precision="fp32", fold_teacher=False),
    "fast": dict(),
    "fp32": dict(amp=False),
    "compile": dict(compile=True),
}
FMNIST_SHAPE = dict(in_chans=1, image_size=28, num_classes=10, train_images=60_000)


def time_steps(methods: list[str], archs: list[str], variants: list[str], args: argparse.Namespace,
               device: torch.device) -> pd.DataFrame:
    """Median/min seconds per loader batch of every (method, arch, variant), timed in interleaved rounds."""
    base = ProbeConfig(batches=1, warmup=args.warmup, repeats=args.rounds, batch_size=args.batch, **FMNIST_SHAPE)
    prepared: dict[tuple[str, str, str], PreparedProbe] = {}
    for arch in archs:
        for method in methods:
            for variant in variants:
                torch.manual_seed(0)
                prepared[(method, arch, variant)] = prepare(method, arch, sigma=args.sigma, teacher_arch=args.teacher,
                                                            cfg=replace(base, **VARIANTS[variant]), device=device)
            print(f"  built and warmed up {method} on {arch}", flush=True)
    times: dict[tuple[str, str, str], list[float]] = {key: [] for key in prepared}
    for r in range(args.rounds):
        for key, probe in prepared.items():
            times[key].append(probe.time_batches(args.batches))
        print(f"  round {r + 1}/{args.rounds} done", flush=True)
    rows = []
    for (method, arch, variant), probe in prepared.items():
        row = probe.row(times[(method, arch, variant)])
        rows.append({**row, "variant": variant, "rounds": args.rounds, "image_shape": "1x28x28"})
    df = pd.DataFrame(rows)
    plain = df[df["variant"] == "plain"].set_index(["method", "arch"])
    key = list(zip(df["method"], df["arch"]))
    df["speedup_over_plain"] = [plain.loc[k, "seconds_per_batch"] for k in key] / df["seconds_per_batch"]
    df["speedup_over_plain_min"] = [plain.loc[k, "seconds_per_batch_min"] for k in key] / df["seconds_per_batch_min"]
    return df


def print_speed(df: pd.DataFrame, methods: list[str], archs: list[str], variants: list[str], target: float) -> None:
    r0 = df.iloc[0]
    print(f"\nTraining step, {r0['device']}, Fashion-MNIST shape 1x28x28, batch {r0['batch_size']}, "
          f"median (and min) of {r0['rounds']} interleaved rounds; CRT teacher {df['teacher_arch'].max()}")
    print(f"{'arch':<24}{'method':<12}{'variant':<9}{'ms/batch':>10}{'min':>8}{'ms/img':>8}"
          f"{'x plain':>9}{'(min)':>7}{'prec':>6}{'CL':>4}")
    for arch in archs:
        for method in methods:
            for variant in variants:
                r = df[(df["method"] == method) & (df["arch"] == arch) & (df["variant"] == variant)].iloc[0]
                print(f"{arch:<24}{method:<12}{variant:<9}{r['seconds_per_batch'] * 1e3:>10.0f}"
                      f"{r['seconds_per_batch_min'] * 1e3:>8.0f}{r['seconds_per_batch'] * 1e3 / r['batch_size']:>8.2f}"
                      f"{r['speedup_over_plain']:>9.2f}{r['speedup_over_plain_min']:>7.2f}{r['precision']:>6}"
                      f"{'y' if r['channels_last'] else 'n':>4}")
    if "fast" in variants:
        fast = df[df["variant"] == "fast"]
        below = fast[fast["speedup_over_plain"] < target]
        print(f"fast path >= {target:g}x over plain (median): "
              f"{len(fast) - len(below)}/{len(fast)}" + ("" if below.empty else "; below: " + ", ".join(
                  f"{r.method}/{r.arch} {r.speedup_over_plain:.2f}x" for r in below.itertuples())))


def parity(args: argparse.Namespace) -> pd.DataFrame:
    """Gaussian training of a ResNet-20 in float32 and on the fast path: noisy test accuracy with 95% intervals."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultsStore(Path(tmp) / "results")
        for amp in (False, True):
            cfg = resolve_run_config("gaussian", args.parity_arch, profile="cpu", dataset=args.parity_dataset,
                                     sigma=args.sigma, epochs=args.parity_epochs, batch_size=args.batch,
                                     lr=0.05, seed=0, train_limit=args.parity_train, test_limit=args.parity_test,
                                     data_dir=args.data_dir, device=args.device, amp=amp)
            run_id = train_run(cfg, store, progress=False)
            run = store.runs(where={"run_id": run_id}).iloc[-1]
            last = store.read("epochs", where={"run_id": run_id}).sort_values("epoch").iloc[-1]
            n = min(args.parity_test, EVAL_IMAGES)
            k = round(float(last["noisy_test_acc"]) * n)
            ci = binomtest(k, n).proportion_ci(0.95)
            rows.append({"run_precision": run["precision"], "amp": amp, "arch": cfg.arch, "dataset": cfg.dataset,
                         "sigma": cfg.sigma, "epochs": cfg.epochs, "train_images": cfg.train_limit,
                         "test_images": n, "correct": k, "noisy_test_acc": k / n, "ci95_low": ci.low,
                         "ci95_high": ci.high, "train_seconds": float(run["train_seconds"]),
                         "final_loss": float(last["loss"]), "device": run["device"],
                         "channels_last": bool(run["channels_last"])})
            print(f"  parity run {run['precision']}: noisy acc {k / n:.3f} [{ci.low:.3f}, {ci.high:.3f}], "
                  f"{float(run['train_seconds']):.1f} s", flush=True)
    df = pd.DataFrame(rows)
    fp32, fast = df.iloc[0], df.iloc[1]
    overlap = fp32["ci95_low"] <= fast["ci95_high"] and fast["ci95_low"] <= fp32["ci95_high"]
    print(f"\nAccuracy parity (gaussian, {fp32['arch']}, {fp32['dataset']}, {fp32['train_images']} images x "
          f"{fp32['epochs']} epochs, sigma {fp32['sigma']:g}, noisy test accuracy on {fp32['test_images']} images):")
    for r in df.itertuples():
        print(f"  {r.run_precision:<5} {r.noisy_test_acc:.3f}  95% CI [{r.ci95_low:.3f}, {r.ci95_high:.3f}]  "
              f"train {r.train_seconds:.1f} s")
    print(f"  intervals overlap: {'yes' if overlap else 'NO'}; training speed-up {fp32['train_seconds'] / fast['train_seconds']:.2f}x")
    return df


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="full", action="store_false", help="the default: ~5 minutes on 2 cores")
    size.add_argument("--full", action="store_true", help="more rounds and a longer parity recipe")
    parser.add_argument("--archs", nargs="+", default=list(ARCHS))
    parser.add_argument("--teacher", default="resnet20", help="CRT's teacher architecture")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=128, help="loader batch (the cpu profile's)")
    parser.add_argument("--batches", type=int, default=1, help="timed loader batches per round")
    parser.add_argument("--rounds", type=int, default=None, help="interleaved rounds (quick 3, full 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed loader batches per probe")
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--variants", nargs="+", default=["plain", "fast"], choices=list(VARIANTS))
    parser.add_argument("--target", type=float, default=1.5, help="the speed-up the fast path should reach")
    parser.add_argument("--no-parity", dest="parity", action="store_false", help="skip the accuracy parity runs")
    parser.add_argument("--no-speed", dest="speed", action="store_false", help="skip the step timings")
    parser.add_argument("--parity-arch", default="resnet20")
    parser.add_argument("--parity-dataset", default="fashion-mnist", help="fashion-mnist, or synthetic")
    parser.add_argument("--parity-train", type=int, default=None, help="training images (quick 3000, full 10000)")
    parser.add_argument("--parity-test", type=int, default=None, help="test images (quick 1000, full 2000)")
    parser.add_argument("--parity-epochs", type=int, default=None, help="epochs (quick 3, full 6)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    args.rounds = args.rounds or (5 if args.full else 3)
    args.parity_train = args.parity_train or (10_000 if args.full else 3000)
    args.parity_test = args.parity_test or (2000 if args.full else 1000)
    args.parity_epochs = args.parity_epochs or (6 if args.full else 3)
    device = pick_device(args.device)
    if "plain" not in args.variants:
        args.variants.insert(0, "plain")
    if args.speed:
        df = time_steps(args.methods, args.archs, args.variants, args, device)
        print_speed(df, args.methods, args.archs, args.variants, args.target)
        print(f"written {write_bench_table(df, args.out, 'train')}")
    if args.parity:
        print(f"written {write_bench_table(parity(args), args.out, 'train-parity')}")


if __name__ == "__main__":
    main()
