"""Throughput of the core path on this machine: training images/s and certification noisy forwards/s.

For each architecture: the Gaussian training step (forward + backward + SGD on one noisy draw of a
batch) and the CRT step (plus the frozen teacher's forward), both as the training engine runs them,
and Smooth.certify's noisy forwards per second. Writes results/bench/throughput-<time>.parquet and prints a table with the CRT/Gaussian ratio.

    python benchmarks/bench_throughput.py --archs resnet20 resnet110 --steps 20
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from crt_bench.certify.smooth import Smooth
from crt_bench.core.provenance import environment, pick_device, synchronize
from crt_bench.models.build import build_model
from crt_bench.store.bench import write_bench_table
from crt_bench.timing.probe import ProbeConfig, probe


def model_for(arch: str, device: torch.device) -> torch.nn.Module:
    return build_model(arch, num_classes=10, in_chans=3, mean=[0.5] * 3, std=[0.25] * 3).to(device)


def train_images_per_s(method: str, arch: str, teacher_arch: str, batch: int, steps: int,
                       device: torch.device) -> float:
    """Images/s of the training engine's step (crt_bench.train.step, as the training loop runs it)."""
    cfg = ProbeConfig(batches=steps, warmup=2, repeats=1, batch_size=batch)
    return probe(method, arch, teacher_arch=teacher_arch, cfg=cfg, device=device)["images_per_s"]


def certify_forwards_per_s(arch: str, n: int, batch: int, images: int, device: torch.device) -> float:
    smooth = Smooth(model_for(arch, device).eval(), 10, 0.25)
    x = torch.rand(3, 32, 32, device=device)
    smooth.certify(x, 10, batch, 0.001, batch)  # warm-up
    synchronize(device)
    t0 = time.perf_counter()
    for _ in range(images):
        smooth.certify(x, 100, n, 0.001, batch)
    synchronize(device)
    return images * (n + 100) / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet20", "resnet110"])
    parser.add_argument("--teacher", default="resnet110")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--certify-n", type=int, default=2000)
    parser.add_argument("--certify-batch", type=int, default=1000)
    parser.add_argument("--certify-images", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    device = pick_device()
    torch.manual_seed(0)
    env = environment(device)
    rows = []
    for arch in args.archs:
        gauss = train_images_per_s("gaussian", arch, args.teacher, args.batch, args.steps, device)
        crt = train_images_per_s("crt", arch, args.teacher, args.batch, args.steps, device)
        cert = certify_forwards_per_s(arch, args.certify_n, args.certify_batch, args.certify_images, device)
        rows.append({"arch": arch, "teacher": args.teacher, "batch": args.batch, "gaussian_train_img_s": gauss,
                     "crt_train_img_s": crt, "crt_over_gaussian_step_time": gauss / crt,
                     "certify_noisy_forwards_s": cert, "certify_n": args.certify_n, **env})
        print(f"{arch:>10}: train gaussian {gauss:8.1f} img/s | crt (teacher {args.teacher}) {crt:8.1f} img/s "
              f"| CRT step / Gaussian step {gauss / crt:5.2f}x | certify {cert:9.1f} noisy forwards/s "
              f"({env['device']})")
    path = write_bench_table(rows, args.out, "throughput")
    print(f"written {path}")


if __name__ == "__main__":
    main()
