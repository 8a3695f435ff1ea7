"""Certification speed: crt-bench's CERTIFY engine against a faithful reference loop, side by side.

The reference loop is written below with the semantics of Cohen et al.'s ``core.py``
(``Smooth.certify``), which every baseline repository copies: one image at a time, ``x.repeat((b, 1, 1, 1))``,
``torch.randn_like(batch) * sigma``, fp32 (IEEE: TF32 off, :mod:`crt_bench.core.tf32`), ``argmax``, counts accumulated on the host with numpy per
batch (element by element, as ``Smooth._count_arr`` does), batch 1000.  Both certify the same images
of the synthetic test split with the same model, N0 and N; the time per image is wall time. Ratios
are "reference seconds / engine seconds" for the same images, measured in one process in
interleaved chunks (the order of the variants rotates from chunk to chunk, so that a load change on a
shared machine hits all of them alike).

Engine variants: ``fp32`` and ``bf16`` (autocast of the base classifier only; the noise stays float32;
``--precisions`` may add ``tf32``, Ampere+ GPUs, and ``fp16``)
at the engine's own batch size (``--batch``; default: chosen by the engine, 128 on a CPU, from free
memory on a GPU), and ``fp32@ref-batch``: fp32 at the reference's batch size, which separates the gain
of the batch size from the rest of the engine (BatchNorm folding, channels-last, in-place noise,
multi-image batches).  ``--compile`` adds torch.compile'd variants.  Nothing timed includes a warm-up:
before its first timed chunk each engine variant runs :meth:`Smooth.warm_up` at every forward batch
shape the chunks will use (folding, compilation of each static shape, cuDNN tuning), reported apart as
``prepare_seconds``; the reference loop certifies one small image first.

Agreement: a ResNet-20 trained for a few dozen noisy SGD steps on the synthetic data (non-trivial,
image-dependent predictions) is certified by the reference loop and by the engine (fp32 and bf16);
the report gives the fraction of equal predictions and, per image, the z score of the difference of
the two ``nA`` (both Binomial(n, pA) if the engine is right: |z| > 3 should be rare), plus the
certified accuracy and ACR of both.

Writes results/bench/certify-<time>.parquet (one row per model x variant, plus agreement rows).

    python benchmarks/bench_certify.py                                   # CPU: a few minutes
    python benchmarks/bench_certify.py --n 100000 --images 20 --agree-n 10000    # a GPU
"""
from __future__ import annotations

import argparse
import os
import time
from math import ceil
from pathlib import Path

import numpy as np
import torch

from crt_bench.certify.batching import forward_batch_sizes
from crt_bench.certify.smooth import Smooth
from crt_bench.certify.stats import ABSTAIN, counts_for_radius, radius_from_counts
from crt_bench.core.provenance import environment, pick_device, synchronize
from crt_bench.core.tf32 import tf32_mode
from crt_bench.data.datasets import load_split
from crt_bench.models.build import build_model
from crt_bench.store.bench import write_bench_table

NUM_CLASSES = 10


# --------------------------------------------------------------------------------------------------
# The reference loop (Cohen et al., core.py semantics)
# --------------------------------------------------------------------------------------------------


def _count_arr(arr: np.ndarray, length: int) -> np.ndarray:
    counts = np.zeros(length, dtype=int)
    for idx in arr:
        counts[idx] += 1
    return counts


def reference_sample_noise(model: torch.nn.Module, x: torch.Tensor, num: int, batch_size: int,
                           sigma: float) -> np.ndarray:
    with torch.no_grad():
        counts = np.zeros(NUM_CLASSES, dtype=int)
        for _ in range(ceil(num / batch_size)):
            this_batch_size = min(batch_size, num)
            num -= this_batch_size
            batch = x.repeat((this_batch_size, 1, 1, 1))
            noise = torch.randn_like(batch) * sigma
            predictions = model(batch + noise).argmax(1)
            counts += _count_arr(predictions.cpu().numpy(), NUM_CLASSES)
        return counts


def reference_certify(model: torch.nn.Module, x: torch.Tensor, n0: int, n: int, alpha: float,
                      batch_size: int, sigma: float) -> tuple[int, float, int]:
    """(prediction, radius, nA) of CERTIFY with the reference loop (IEEE float32: TF32 off)."""
    model.eval()
    with tf32_mode(False):
        counts_selection = reference_sample_noise(model, x, n0, batch_size, sigma)
        c_a = int(counts_selection.argmax())
        counts_estimation = reference_sample_noise(model, x, n, batch_size, sigma)
    n_a = int(counts_estimation[c_a])
    radius = radius_from_counts(n_a, n, alpha, sigma)
    return (ABSTAIN, 0.0, n_a) if radius is None else (c_a, radius, n_a)


# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------


class Variant:
    def __init__(self, name: str, model: torch.nn.Module, args: argparse.Namespace, *, reference: bool = False,
                 precision: str = "fp32", batch: int | None = None, compile: bool = False) -> None:
        self.name, self.model, self.args, self.reference = name, model, args, reference
        self.precision, self.batch, self.compile = precision, batch, compile
        self.smooth = None if reference else Smooth(model, NUM_CLASSES, args.sigma, precision=precision,
                                                    compile=compile)
        self.seconds = 0.0
        self.results: list[tuple[int, float]] = []
        self.prepare_seconds = 0.0

    def warm_up(self, images: torch.Tensor) -> None:
        """Excluded from the timing: the engine's forward at every batch shape of the timed chunks of
        ``images`` (BatchNorm folding, compilation, cuDNN, caches); the reference certifies one image."""
        start = time.perf_counter()
        if self.reference:
            self.run(images[:1], n0=10, n=self.args.ref_batch)
            self.results.clear()
        else:
            warm_up_engine(self.smooth, images, self.args.chunk, self.args.n0 + self.args.n, self.batch)
        self.prepare_seconds = time.perf_counter() - start

    def run(self, images: torch.Tensor, n0: int, n: int) -> None:
        if self.reference:
            for x in images:
                c, r, _ = reference_certify(self.model, x, n0, n, self.args.alpha, self.args.ref_batch,
                                            self.args.sigma)
                self.results.append((c, r))
        else:
            self.results.extend(self.smooth.certify_many(images, n0, n, self.args.alpha, self.batch))

    def used_batch(self) -> int:
        if self.reference:
            return self.args.ref_batch
        return int(self.smooth.last_batch_size or 0)


def warm_up_engine(smooth: Smooth, images: torch.Tensor, chunk: int, samples: int, batch: int | None) -> None:
    """:meth:`Smooth.warm_up` at every forward batch size of certifying ``images`` ``chunk`` at a time."""
    b = batch or smooth.auto_batch_size(images[0])
    calls = [len(images[i:i + chunk]) for i in range(0, len(images), chunk)]
    smooth.warm_up(images[0], forward_batch_sizes(calls, samples, b))


def time_variants(variants: list[Variant], images: torch.Tensor, args: argparse.Namespace,
                  device: torch.device) -> None:
    for variant in variants:
        variant.warm_up(images)
    for j, start in enumerate(range(0, len(images), args.chunk)):
        chunk = images[start : start + args.chunk]
        order = variants[j % len(variants):] + variants[: j % len(variants)]
        for variant in order:
            synchronize(device)
            t0 = time.perf_counter()
            variant.run(chunk, args.n0, args.n)
            synchronize(device)
            variant.seconds += time.perf_counter() - t0


def model_for(arch: str, device: torch.device, seed: int) -> torch.nn.Module:
    info = load_split("synthetic", "test", limit=1).info
    torch.manual_seed(seed)
    return build_model(arch, num_classes=NUM_CLASSES, in_chans=3, mean=info.mean, std=info.std).to(device).eval()


def speed(args: argparse.Namespace, device: torch.device, env: dict) -> list[dict]:
    test = load_split("synthetic", "test")
    per_arch = dict(item.split("=") for item in args.arch_images)
    rows = []
    for arch in args.archs:
        images = test.x[: int(per_arch.get(arch, args.images))].to(device)
        model = model_for(arch, device, args.seed)
        variants = [Variant("reference", model, args, reference=True)]
        for precision in args.precisions:
            variants.append(Variant(precision, model, args, precision=precision, batch=args.batch))
            if args.compile:
                variants.append(Variant(f"{precision}+compile", model, args, precision=precision, batch=args.batch,
                                        compile=True))
        if args.same_batch:
            variants.append(Variant("fp32@ref-batch", model, args, precision="fp32", batch=args.ref_batch))
        torch.manual_seed(args.seed)
        time_variants(variants, images, args, device)
        reference = variants[0]
        print(f"\n{arch}: {len(images)} images, N0={args.n0}, N={args.n}, sigma={args.sigma} ({env['device']})")
        print(f"  {'variant':<18}{'batch':>7}{'s/image':>10}{'images/s':>10}{'noisy fwd/s':>13}{'speedup':>9}"
              f"{'prepare s':>11}")
        for v in variants:
            per_image = v.seconds / len(images)
            ratio = reference.seconds / v.seconds
            fwd = len(images) * (args.n0 + args.n) / v.seconds
            same = np.mean([a[0] == b[0] for a, b in zip(v.results, reference.results)])
            print(f"  {v.name:<18}{v.used_batch():>7}{per_image:>10.3f}{1 / per_image:>10.3f}{fwd:>13.0f}"
                  f"{ratio:>8.2f}x{v.prepare_seconds:>11.2f}")
            folded = 0 if v.smooth is None else v.smooth.folded_batchnorms
            tf32 = False if v.smooth is None else v.smooth.tf32_in_force(device)
            rows.append({"kind": "speed", "arch": arch, "variant": v.name, "engine": "reference" if v.reference
                         else "crt-bench", "precision": v.precision, "tf32": tf32, "noise_dtype": "float32", "compile": v.compile,
                         "batch": v.used_batch(), "images": len(images), "n0": args.n0, "n": args.n,
                         "sigma": args.sigma, "seconds": v.seconds, "seconds_per_image": per_image,
                         "images_per_s": 1 / per_image, "noisy_forwards_per_s": fwd, "speedup_vs_reference": ratio,
                         "prepare_seconds": v.prepare_seconds, "folded_batchnorms": folded,
                         "same_prediction_as_reference": float(same), "threads": torch.get_num_threads(), **env})
    return rows


# --------------------------------------------------------------------------------------------------
# Agreement on a model with non-trivial predictions
# --------------------------------------------------------------------------------------------------


def quick_model(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    """``--agree-arch`` after ``--agree-steps`` SGD steps of Gaussian-noise training on synthetic data."""
    train = load_split("synthetic", "train")
    model = model_for(args.agree_arch, device, args.seed).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(args.seed)
    for _ in range(args.agree_steps):
        idx = torch.randint(0, len(train), (64,), generator=gen)
        x, y = train.x[idx].to(device), train.y[idx].to(device)
        loss = torch.nn.functional.cross_entropy(model(x + torch.randn_like(x) * args.sigma), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def agreement(args: argparse.Namespace, device: torch.device, env: dict) -> list[dict]:
    t0 = time.perf_counter()
    model = quick_model(args, device)
    train_s = time.perf_counter() - t0
    test = load_split("synthetic", "test")
    images, labels = test.x[: args.agree_images].to(device), test.y[: args.agree_images].numpy()
    n = args.agree_n or args.n
    torch.manual_seed(args.seed + 1)
    t0 = time.perf_counter()
    ref = [reference_certify(model, x, args.n0, n, args.alpha, args.ref_batch, args.sigma) for x in images]
    ref_s = time.perf_counter() - t0
    ref_pred = np.array([c for c, _, _ in ref])
    ref_radius = np.array([r for _, r, _ in ref])
    ref_na = np.array([a for _, _, a in ref])
    print(f"\nagreement: {args.agree_arch} after {args.agree_steps} noisy SGD steps ({train_s:.0f} s), "
          f"{len(images)} synthetic test images, N0={args.n0}, N={n}, sigma={args.sigma}")
    print(f"  {'engine':<10}{'same pred':>10}{'mean|dr|':>10}{'max|z|':>8}{'|z|>3':>7}"
          f"{'cert acc':>9}{'ACR':>8}{'s/image':>9}")
    print(f"  {'reference':<10}{'':>10}{'':>10}{'':>8}{'':>7}{np.mean(ref_pred == labels):>9.3f}"
          f"{np.mean((ref_pred == labels) * ref_radius):>8.4f}{ref_s / len(images):>9.3f}")
    rows = []
    for precision in args.precisions:
        smooth = Smooth(model, NUM_CLASSES, args.sigma, precision=precision)
        warm_up_engine(smooth, images, len(images), args.n0 + n, args.batch)
        t0 = time.perf_counter()
        ours = smooth.certify_many(images, args.n0, n, args.alpha, args.batch)
        ours_s = time.perf_counter() - t0
        pred = np.array([c for c, _ in ours])
        radius = np.array([r for _, r in ours])
        both = (pred == ref_pred) & (pred != ABSTAIN)
        z = []
        for i in np.flatnonzero(both):
            n_a = counts_for_radius(radius[i], n, args.alpha, args.sigma)
            p = (n_a + ref_na[i]) / (2 * n)
            sd = np.sqrt(2 * n * p * (1 - p))
            z.append(0.0 if sd == 0 else (n_a - ref_na[i]) / sd)
        z = np.abs(np.array(z)) if z else np.zeros(1)
        same = float(np.mean(pred == ref_pred))
        mean_dr = float(np.mean(np.abs(radius - ref_radius)[both])) if both.any() else 0.0
        acc, acr = float(np.mean(pred == labels)), float(np.mean((pred == labels) * radius))
        print(f"  {precision:<10}{same:>10.3f}{mean_dr:>10.4f}{z.max():>8.2f}{int(np.sum(z > 3)):>7}"
              f"{acc:>9.3f}{acr:>8.4f}{ours_s / len(images):>9.3f}")
        rows.append({"kind": "agreement", "arch": args.agree_arch, "variant": precision, "engine": "crt-bench",
                     "precision": precision, "tf32": smooth.tf32_in_force(device), "noise_dtype": "float32", "images": len(images), "n0": args.n0, "n": n,
                     "sigma": args.sigma, "same_prediction_as_reference": same, "mean_abs_radius_diff": mean_dr,
                     "max_abs_z_n_a": float(z.max()), "n_abs_z_over_3": int(np.sum(z > 3)),
                     "certified_accuracy": acc, "acr": acr, "reference_certified_accuracy":
                     float(np.mean(ref_pred == labels)), "reference_acr": float(np.mean((ref_pred == labels) * ref_radius)),
                     "distinct_reference_predictions": len(set(ref_pred.tolist())),
                     "seconds_per_image": ours_s / len(images), "reference_seconds_per_image": ref_s / len(images),
                     "threads": torch.get_num_threads(), **env})
    print(f"  (reference predictions: {len(set(ref_pred.tolist()))} distinct classes, "
          f"{int(np.sum(ref_pred == ABSTAIN))} abstentions)")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", nargs="+", default=["resnet20", "resnet110", "mobilenetv3_small_100"])
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--images", type=int, default=8, help="images certified per model and variant")
    parser.add_argument("--arch-images", nargs="*", default=["resnet110=4"], metavar="ARCH=K",
                        help="fewer (or more) images for some models (default: resnet110=4, ~6x ResNet-20's cost)")
    parser.add_argument("--chunk", type=int, default=4, help="images per interleaved timing chunk")
    parser.add_argument("--ref-batch", type=int, default=1000, help="the reference loop's batch size")
    parser.add_argument("--batch", type=int, default=None, help="the engine's batch size (default: its own choice)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "tf32", "bf16", "fp16"])
    parser.add_argument("--same-batch", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the engine in fp32 at the reference's batch size")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile'd engine variants")
    parser.add_argument("--agree-arch", default="resnet20")
    parser.add_argument("--agree-steps", type=int, default=40)
    parser.add_argument("--agree-images", type=int, default=20)
    parser.add_argument("--agree-n", type=int, default=None, help="N for the agreement check (default: --n)")
    parser.add_argument("--skip-agreement", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    device = pick_device(args.device)
    env = environment(device)
    load_before = os.getloadavg()[0]
    if device.type == "cpu" and load_before > 0.75 * (os.cpu_count() or 1):
        print(f"note: 1-minute load average {load_before:.2f} before the run on {os.cpu_count()} cores: other "
              "processes share the CPU; the reference loop (intra-op threads that synchronise per operator) "
              "suffers more from that than the engine, so ratios come out higher than on an idle machine")
    rows = speed(args, device, env)
    if not args.skip_agreement:
        rows += agreement(args, device, env)
    for row in rows:
        row["load_avg_before"], row["load_avg_after"] = load_before, os.getloadavg()[0]
    path = write_bench_table(rows, args.out, "certify")
    print(f"written {path}")


if __name__ == "__main__":
    main()
