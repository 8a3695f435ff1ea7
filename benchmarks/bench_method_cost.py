"""Training cost of each method relative to Gaussian noise training, measured side by side.

For every registered method (at its paper hyper-parameters for the given sigma, with its recipe's
batch size) on one architecture: time a few loader batches after a warm-up batch, count the rows
that pass through the model with and without gradient, and project

    per-epoch seconds = seconds per loader batch x ceil(50,000 / batch)     (CIFAR-10 train set)
    recipe seconds    = per-epoch seconds x recipe epochs

The table prints each method's per-epoch and whole-recipe ratio to Gaussian next to the paper's
whole-run ratios for ResNet-110 (SmoothAdv 46.20x, MACER 20.86x, SmoothMix 4.97x; CRT paper, Table 1),
and the forward+backward passes over B rows that explain the per-epoch ratio. Writes
results/bench/method_cost-<time>.parquet.

    python benchmarks/bench_method_cost.py --arch resnet20 --batches 3
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import pandas as pd
import torch

from crt_bench.archs import build_model
from crt_bench.methods import StepContext, get_method, list_methods
from crt_bench.provenance import environment, pick_device, synchronize

CIFAR10_TRAIN = 50_000
PAPER_RATIO = {"smoothadv": 46.20, "macer": 20.86, "smoothmix": 4.97}  # whole run, ResNet-110, V100


class RowCounter:
    """Counts images through a model's forward, split by whether autograd records them."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.grad_rows = 0
        self.nograd_rows = 0
        model.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple) -> None:
        rows = args[0].shape[0]
        if torch.is_grad_enabled():
            self.grad_rows += rows
        else:
            self.nograd_rows += rows


def measure(method: str, arch: str, teacher_arch: str, sigma: float, batches: int, device: torch.device,
            batch_override: int | None) -> dict:
    spec = get_method(method)
    hp = spec.make_hparams(sigma=sigma)
    batch = batch_override or spec.recipe.batch_size
    model = build_model(arch, num_classes=10, in_chans=3, mean=[0.5] * 3, std=[0.25] * 3).to(device).train()
    counter = RowCounter(model)
    teacher = None
    if spec.needs_teacher:
        teacher = build_model(teacher_arch, num_classes=10, in_chans=3, mean=[0.5] * 3, std=[0.25] * 3)
        teacher = teacher.to(device).eval().requires_grad_(False)
    teacher_counter = RowCounter(teacher) if teacher is not None else None
    ctx = StepContext(sigma=sigma, hparams=hp, epoch=spec.recipe.epochs - 1, epochs=spec.recipe.epochs,
                      teacher=teacher)  # last epoch: warm-ups finished, full-strength attacks
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    chunks = max(1, int(spec.steps_per_batch(hp)))
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def loader_batch() -> None:
        for xb, yb in zip(x.chunk(chunks), y.chunk(chunks)):
            loss = spec.loss(model, xb, yb, ctx)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    loader_batch()  # warm-up
    synchronize(device)
    counter.grad_rows = counter.nograd_rows = 0
    if teacher_counter:
        teacher_counter.grad_rows = teacher_counter.nograd_rows = 0
    t0 = time.perf_counter()
    for _ in range(batches):
        loader_batch()
    synchronize(device)
    per_batch = (time.perf_counter() - t0) / batches
    steps_per_epoch = math.ceil(CIFAR10_TRAIN / batch)
    return {
        "method": method, "arch": arch, "sigma": sigma, "batch": batch, "optimizer_steps_per_batch": chunks,
        "hparams": str(hp), "seconds_per_loader_batch": per_batch, "epoch_seconds": per_batch * steps_per_epoch,
        "recipe_epochs": spec.recipe.epochs, "recipe_hours": per_batch * steps_per_epoch * spec.recipe.epochs / 3600,
        "fwd_bwd_passes_over_B": counter.grad_rows / batches / batch,
        "fwd_only_passes_over_B": (counter.nograd_rows + (teacher_counter.nograd_rows if teacher_counter else 0))
        / batches / batch,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--teacher", default="resnet110", help="CRT's teacher architecture")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--batches", type=int, default=3, help="timed loader batches per method")
    parser.add_argument("--batch", type=int, default=None, help="override every recipe's batch size")
    parser.add_argument("--methods", nargs="*", default=None)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    device = pick_device()
    torch.manual_seed(0)
    methods = args.methods or ["gaussian"] + [m.name for m in list_methods() if m.name != "gaussian"]
    rows = []
    for name in methods:
        rows.append(measure(name, args.arch, args.teacher, args.sigma, args.batches, device, args.batch))
        r = rows[-1]
        print(f"  measured {name:<12} {r['seconds_per_loader_batch']:.3f} s per loader batch of {r['batch']}",
              flush=True)
    df = pd.DataFrame(rows)
    base = df.set_index("method").loc["gaussian"]
    df["epoch_ratio"] = df["epoch_seconds"] / base["epoch_seconds"]
    df["recipe_ratio"] = df["recipe_hours"] / base["recipe_hours"]
    df["paper_recipe_ratio"] = df["method"].map(PAPER_RATIO)
    env = environment(device)
    for key, value in env.items():
        df[key] = value
    print(f"\nCost relative to Gaussian training, {args.arch}, sigma {args.sigma}, {env['device']}")
    print(f"{'method':<12}{'batch':>6}{'fwd+bwd/B':>10}{'fwd/B':>7}{'epoch s':>10}{'epoch x':>9}"
          f"{'epochs':>7}{'recipe h':>10}{'recipe x':>10}{'paper x':>9}")
    for _, r in df.iterrows():
        paper = "" if pd.isna(r["paper_recipe_ratio"]) else f"{r['paper_recipe_ratio']:.2f}"
        print(f"{r['method']:<12}{r['batch']:>6}{r['fwd_bwd_passes_over_B']:>10.2f}{r['fwd_only_passes_over_B']:>7.2f}"
              f"{r['epoch_seconds']:>10.1f}{r['epoch_ratio']:>9.2f}{r['recipe_epochs']:>7}{r['recipe_hours']:>10.2f}"
              f"{r['recipe_ratio']:>10.2f}{paper:>9}")
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"method_cost-{time.strftime('%Y%m%dT%H%M%S')}.parquet"
    df.to_parquet(path, index=False)
    print(f"written {path}")


if __name__ == "__main__":
    main()
