"""Fidelity of the slowdown table, measured side by side on one machine (interleaved rounds, one process).

Every probe below runs the paper protocol (crt_bench.timing.paper: fp32, a DataLoader over CIFAR-shaped
uint8 images with RandomCrop(32, 4) and flip, .item() per step, each official script's per-epoch test pass),
K loader batches per round projected to an epoch, on ResNet-110 at sigma 0.25:

* Gaussian at 150 x 256 (the table's baseline), standard training at 150 x 256 and at the CRT authors'
  200 x 128 (does the paper's baseline cost more than Gaussian?);
* SmoothAdv m = 8 (the model the CRT paper timed) and m = 4 (Salman's other best model): is the cost linear in m?
* MACER (440 epochs, k = 16) and SmoothMix (m = 2, T = 4);

then each ratio (median over rounds of the same-round ratio, distribution-free interval) to Gaussian and to
both standard recipes, the expected ratio from the passes, the paper's 46.20 / 20.86 / 4.97, and the
baseline-free ratios SmoothAdv / SmoothMix and MACER / SmoothMix beside the paper's 9.30 and 4.20.
On a CPU every probe times the same small batch (``--batch``, per-image costs carry over; epochs per recipe
differ) and loads in the main process (``--workers 0``: 7 probes' persistent loader workers would outnumber
2 cores; ``--workers -1`` gives each script's own, 4 or MACER's 1). Writes results/bench/slowdown-<time>.parquet.

    nice python benchmarks/bench_slowdown.py                 # ResNet-110, batch 8, 1 batch x 3 rounds: minutes
    python benchmarks/bench_slowdown.py --arch resnet20 --rounds 2   # a quick look
"""
from __future__ import annotations

import argparse
import statistics
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

from crt_bench.core.provenance import pick_device
from crt_bench.report.slowdown import PAPER_BASELINE_FREE, PAPER_SLOWDOWN
from crt_bench.store.bench import write_bench_table
from crt_bench.timing.paper import prepare_paper
from crt_bench.timing.probe import ProbeConfig
from crt_bench.timing.rounds import median_interval

# (label, method, recipe, hyper-parameter overrides)
JOBS = [("gaussian 150x256", "gaussian", "", {}), ("standard 150x256", "standard", "", {}),
        ("standard 200x128", "standard", "200x128", {}), ("smoothadv m=8", "smoothadv", "", {"m": "8"}),
        ("smoothadv m=4", "smoothadv", "", {"m": "4"}), ("macer", "macer", "", {}), ("smoothmix", "smoothmix", "", {})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet110")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--batch", type=int, default=8, help="every probe's batch (None on a GPU: each recipe's)")
    parser.add_argument("--batches", type=int, default=1, help="K loader batches per probe per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=0, help="loader workers; -1: each official script's")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    device = pick_device()
    torch.manual_seed(0)
    base = ProbeConfig(batches=args.batches, warmup=1, repeats=args.rounds, batch_size=args.batch or None,
                       protocol="paper", amp=False, loader_workers=None if args.workers < 0 else args.workers)
    probes = []
    for label, method, recipe, sets in JOBS:
        cfg = replace(base, hparams={method: sets} if sets else {})
        probes.append((label, prepare_paper(method, args.arch, sigma=args.sigma, cfg=cfg, device=device, recipe=recipe)))
        print(f"  prepared {label}", flush=True)
    times: list[list[float]] = [[] for _ in probes]
    for r in range(args.rounds):  # the order rotates every round: a load change hits every probe alike
        for i in [(i + r) % len(probes) for i in range(len(probes))]:
            times[i].append(probes[i][1].time_batches(args.batches))
        print(f"  round {r + 1}/{args.rounds}: " + ", ".join(f"{lbl} {t[-1]:.2f}s" for (lbl, _), t in zip(probes, times)),
              flush=True)
    rows = []
    for (label, p), series in zip(probes, times):
        row = p.row(series)
        per_epoch = row["recipe_epochs"] * row["batches_per_epoch"]  # recipe batches, at this probe's batch
        rows.append({"label": label, **row, "recipe_batches": per_epoch})
    df = pd.DataFrame(rows)
    g = df.index[df["label"] == "gaussian 150x256"][0]

    def ratio(i: int, j: int) -> tuple[float, float, float]:
        """Median and interval of the same-round recipe ratio of probe i over probe j."""
        scale = df.loc[i, "recipe_batches"] / df.loc[j, "recipe_batches"]
        median, low, high, _ = median_interval([a / b * scale for a, b in zip(times[i], times[j])])
        return median, low, high

    s150, s200 = (df.index[df["label"] == f"standard {r}"][0] for r in ("150x256", "200x128"))
    mix = df.index[df["label"] == "smoothmix"][0]
    units = df["fwd_bwd_passes"] + df["fwd_only_passes"] / 3
    for i in df.index:
        for name, j in (("gaussian", g), ("standard_150x256", s150), ("standard_200x128", s200), ("smoothmix", mix)):
            df.loc[i, [f"x_{name}", f"x_{name}_low", f"x_{name}_high"]] = ratio(i, j)
        df.loc[i, "expected_x_gaussian"] = units[i] / units[g] * df.loc[i, "recipe_batches"] / df.loc[g, "recipe_batches"]
        df.loc[i, "paper_x_standard"] = PAPER_SLOWDOWN.get(df.loc[i, "method"], float("nan"))
        df.loc[i, "paper_x_smoothmix"] = PAPER_BASELINE_FREE.get((df.loc[i, "method"], "smoothmix"), float("nan"))
    m8, m4 = (df.index[df["label"] == f"smoothadv m={m}"][0] for m in (8, 4))
    df["m8_over_m4"] = ratio(m8, m4)[0]
    df["rounds"] = args.rounds
    print(f"\nPaper protocol, {args.arch}, sigma {args.sigma}, {df['device'].iloc[0]}, batch {args.batch}, "
          f"{args.batches} batch(es) x {args.rounds} rounds; recipe ratios [interval]")
    print(f"{'probe':<18}{'s/batch':>9}{'expected xG':>12}{'x Gaussian':>24}{'x std 150x256':>15}{'x std 200x128':>15}"
          f"{'paper x':>9}{'x SmoothMix':>13}{'paper':>7}")
    for _, r in df.iterrows():
        cells = [f"{r['x_gaussian']:.2f} [{r['x_gaussian_low']:.2f}, {r['x_gaussian_high']:.2f}]"]
        paper = "" if pd.isna(r["paper_x_standard"]) else f"{r['paper_x_standard']:.2f}"
        free = "" if pd.isna(r["paper_x_smoothmix"]) else f"{r['paper_x_smoothmix']:.2f}"
        print(f"{r['label']:<18}{statistics.median(times[_]):>9.2f}{r['expected_x_gaussian']:>12.2f}{cells[0]:>24}"
              f"{r['x_standard_150x256']:>15.2f}{r['x_standard_200x128']:>15.2f}{paper:>9}{r['x_smoothmix']:>13.2f}{free:>7}")
    print(f"SmoothAdv m=8 / m=4 per recipe: {df['m8_over_m4'].iloc[0]:.2f} (linear in m: 2.00; passes: "
          f"{df.loc[m8, 'fwd_bwd_passes'] / df.loc[m4, 'fwd_bwd_passes']:.2f})")
    path = write_bench_table(df.drop(columns=["round_seconds"], errors="ignore"), args.out, "slowdown")
    print(f"written {path}")


if __name__ == "__main__":
    main()
