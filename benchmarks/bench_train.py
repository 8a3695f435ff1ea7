"""Training-step throughput of every method on one student, reference design vs this engine, side by side.

For each method (paper hyper-parameters at the given sigma) the benchmark times one loader batch of
the real training step (crt_bench.train.step.TrainStep, as the training loop runs it) under two or more
engine variants, interleaved round by round in one process so that machine drift hits all alike:

    plain    the reference design: NCHW, the teacher as given (batch norm, float32, no_grad)
    engine   this engine's defaults: channels-last conv nets, the teacher batch-norm-folded, NHWC,
             inference mode, bf16 where the device has native bf16; bf16 autocast of the step on CUDA
    nchw     engine without channels-last (isolates the student's memory format)
    compile  engine plus torch.compile of the student

It prints images/s, each method's step time relative to the Gaussian step of the same variant (the
CRT row is the "CRT step / Gaussian step" figure; target <= 1.3x on a GPU with a ResNet-110 teacher)
and each variant's speed-up over plain. Writes results/bench/train-<time>.parquet.

    python benchmarks/bench_train.py --arch resnet20 --teacher resnet110 --batch 64
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from crt_bench.core.provenance import pick_device
from crt_bench.methods.registry import list_methods
from crt_bench.store.bench import write_bench_table
from crt_bench.timing.probe import ProbeConfig, probe

VARIANTS: dict[str, dict] = {
    "plain": dict(channels_last=False, teacher_precision="fp32", fold_teacher=False),
    "engine": dict(),
    "nchw": dict(channels_last=False),
    "compile": dict(compile=True),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--teacher", default="resnet110", help="CRT's teacher architecture")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=64,
                        help="loader batch for every method (0: each method's recipe batch size)")
    parser.add_argument("--batches", type=int, default=2, help="timed loader batches per round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    parser.add_argument("--methods", nargs="*", default=None, help="default: every registered method")
    parser.add_argument("--variants", nargs="+", default=["plain", "engine"], choices=list(VARIANTS))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    device = pick_device(args.device)
    torch.manual_seed(0)
    methods = args.methods or ["gaussian"] + [m.name for m in list_methods() if m.name != "gaussian"]
    base = ProbeConfig(batches=args.batches, warmup=1, repeats=1, batch_size=args.batch or None)
    times: dict[tuple[str, str], list[float]] = {}
    rows: dict[tuple[str, str], dict] = {}
    for r in range(args.rounds):
        for variant in args.variants:
            cfg = replace(base, **VARIANTS[variant])
            for method in methods:
                row = probe(method, args.arch, sigma=args.sigma, teacher_arch=args.teacher, cfg=cfg, device=device)
                times.setdefault((variant, method), []).append(row["seconds_per_batch"])
                rows[(variant, method)] = row
        print(f"  round {r + 1}/{args.rounds} done", flush=True)

    out = []
    for (variant, method), row in rows.items():
        seconds = statistics.median(times[(variant, method)])
        out.append({**row, "variant": variant, "seconds_per_batch": seconds,
                    "seconds_per_batch_min": min(times[(variant, method)]),
                    "seconds_per_batch_max": max(times[(variant, method)]),
                    "images_per_s": row["batch_size"] / seconds, "rounds": args.rounds})
    df = pd.DataFrame(out)
    gauss = df[df["method"] == "gaussian"].set_index("variant")["seconds_per_batch"]
    df["over_gaussian_step"] = df["seconds_per_batch"] / df["variant"].map(gauss)
    plain = df[df["variant"] == "plain"].set_index("method")["seconds_per_batch"] if "plain" in args.variants else None
    df["speedup_over_plain"] = df["method"].map(plain) / df["seconds_per_batch"] if plain is not None else float("nan")

    print(f"\nTraining step, student {args.arch}, teacher {args.teacher}, sigma {args.sigma}, "
          f"{df['device'].iloc[0]}, median of {args.rounds} rounds x {args.batches} loader batches")
    print(f"{'method':<12}{'variant':<9}{'batch':>6}{'img/s':>9}{'x Gaussian':>11}{'x plain':>9}"
          f"{'student':>9}{'teacher':>9}{'CL':>4}")
    for method in methods:
        for variant in args.variants:
            r = df[(df["method"] == method) & (df["variant"] == variant)].iloc[0]
            speed = "" if pd.isna(r["speedup_over_plain"]) else f"{r['speedup_over_plain']:.2f}"
            print(f"{method:<12}{variant:<9}{r['batch_size']:>6}{r['images_per_s']:>9.1f}"
                  f"{r['over_gaussian_step']:>11.2f}{speed:>9}{r['precision']:>9}"
                  f"{r['teacher_precision'] or '-':>9}{'y' if r['channels_last'] else 'n':>4}")
    if "crt" in methods:
        for variant in args.variants:
            r = df[(df["method"] == "crt") & (df["variant"] == variant)].iloc[0]
            print(f"CRT step / Gaussian step ({variant}): {r['over_gaussian_step']:.2f}x")
    path = write_bench_table(df, args.out, "train")
    print(f"written {path}")


if __name__ == "__main__":
    main()
