"""Training cost of each method relative to Gaussian noise training, measured side by side.

Runs crt_bench.timing.probe for every registered method (paper hyper-parameters for the given sigma,
the recipe's batch size) on one architecture in one process, and prints each method's per-epoch and
whole-recipe ratio to Gaussian next to the paper's whole-run ratios for ResNet-110 (SmoothAdv 46.20x,
MACER 20.86x, SmoothMix 4.97x; CRT paper, Table 1), with the forward+backward passes over the batch
that explain the per-epoch ratio. Writes results/bench/method_cost-<time>.parquet.

    python benchmarks/bench_method_cost.py --arch resnet20 --batches 3 --repeats 1
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from crt_bench.core.provenance import pick_device
from crt_bench.methods.registry import list_methods
from crt_bench.store.bench import write_bench_table
from crt_bench.timing.probe import ProbeConfig, probe

PAPER_RATIO = {"smoothadv": 46.20, "macer": 20.86, "smoothmix": 4.97}  # whole run, ResNet-110, one V100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--teacher", default="resnet110", help="CRT's teacher architecture")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--batches", type=int, default=3, help="timed loader batches per repeat")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--batch", type=int, default=None, help="override every recipe's batch size")
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    device = pick_device()
    torch.manual_seed(0)
    cfg = ProbeConfig(batches=args.batches, warmup=1, repeats=args.repeats, batch_size=args.batch)
    methods = args.methods or ["gaussian"] + [m.name for m in list_methods() if m.name != "gaussian"]
    rows = []
    for name in methods:
        rows.append(probe(name, args.arch, sigma=args.sigma, teacher_arch=args.teacher, cfg=cfg, device=device))
        print(f"  measured {name:<12} {rows[-1]['seconds_per_batch']:.3f} s per loader batch of "
              f"{rows[-1]['batch_size']}", flush=True)
    df = pd.DataFrame(rows)
    base = df.set_index("method").loc["gaussian"]
    df["epoch_ratio"] = df["epoch_seconds"] / base["epoch_seconds"]
    df["recipe_ratio"] = df["recipe_hours"] / base["recipe_hours"]
    df["paper_recipe_ratio"] = df["method"].map(PAPER_RATIO)
    print(f"\nCost relative to Gaussian training: {args.arch}, sigma {args.sigma}, {df['device'].iloc[0]}")
    print(f"{'method':<12}{'batch':>6}{'fwd+bwd/B':>10}{'fwd/B':>7}{'epoch s':>10}{'epoch x':>9}"
          f"{'epochs':>7}{'recipe h':>10}{'recipe x':>10}{'paper x':>9}")
    for _, r in df.iterrows():
        paper = "" if pd.isna(r["paper_recipe_ratio"]) else f"{r['paper_recipe_ratio']:.2f}"
        print(f"{r['method']:<12}{r['batch_size']:>6}{r['fwd_bwd_passes']:>10.2f}{r['fwd_only_passes']:>7.2f}"
              f"{r['epoch_seconds']:>10.1f}{r['epoch_ratio']:>9.2f}{r['recipe_epochs']:>7}{r['recipe_hours']:>10.2f}"
              f"{r['recipe_ratio']:>10.2f}{paper:>9}")
    path = write_bench_table(df, args.out, "method_cost")
    print(f"written {path}")


if __name__ == "__main__":
    main()
