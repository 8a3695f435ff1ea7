"""Certification speed: crt-bench's CERTIFY engine against a faithful reference loop and IBM ART, side by side.

The reference loop is written below with the semantics of Cohen et al.'s ``core.py``
(``Smooth.certify``), which every baseline repository copies: one image at a time, ``x.repeat((b, 1, 1, 1))``,
``torch.randn_like(batch) * sigma``, fp32 (IEEE: TF32 off, :mod:`crt_bench.core.tf32`), ``argmax``, counts
accumulated on the host with numpy per batch (element by element, as ``Smooth._count_arr`` does), batch 1000;
``loop bf16`` is the same loop under ``torch.autocast(bfloat16)``.  ``ART`` is IBM ART's
``PyTorchRandomizedSmoothing.certify`` (``pip install '.[bench]'``; skipped with a note when missing) on the
same model, N0 (its ``sample_size``), N, alpha, sigma and batch size 1000.  All certify the same images of
the synthetic test split with the same model; the time per image is wall time.  Ratios are "seconds of the
faithful fp32 loop (or ART) / seconds of the variant" for the same images, measured in one process in
interleaved chunks (the order of the variants rotates from chunk to chunk, so that a load change on a
shared machine hits all of them alike).

Engine variants (keyed noise, so exact early abstention is on; untrained models rarely abstain):
``fp32`` and ``bf16`` (autocast of the base classifier only; the noise stays float32), their compiled
forms ``fp32+compile`` / ``bf16+compile`` (inductor with freezing; bf16 = bf16 weights on the engine's
folded copy) and ``fastest+compile`` (precision ``fastest``: fp32 or bf16, whichever one forward batch runs
faster; the table says which it chose), at the engine's own batch size (``--batch``; default: chosen by the
engine, 128 on a CPU).  The compiled variants share their compiled models (one compilation per precision).
Nothing timed includes a warm-up: before its first timed chunk each engine variant runs
:meth:`Smooth.warm_up` (folding, compilation, the ``fastest`` choice), reported apart as ``prepare_seconds``;
the reference loops and ART certify one small image first.

Agreement: a ResNet-20 trained for a few dozen noisy SGD steps on the synthetic data (non-trivial,
image-dependent predictions) is certified by the reference loop and by the engine (fp32 and bf16);
the report gives the fraction of equal predictions and, per image, the z score of the difference of
the two ``nA`` (both Binomial(n, pA) if the engine is right: |z| > 3 should be rare), plus the
certified accuracy and ACR of both.

Writes results/bench/certify-<time>.parquet (one row per model x variant, plus agreement rows).

    python benchmarks/bench_certify.py                                   # CPU: about 5 minutes
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
from crt_bench.certify.precision import autocast
from crt_bench.certify.smooth import Smooth
from crt_bench.certify.stats import ABSTAIN, counts_for_radius, lower_confidence_bound, radius_from_counts
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
                      batch_size: int, sigma: float, precision: str = "fp32") -> tuple[int, float, int]:
    """(prediction, radius, nA) of CERTIFY with the reference loop (IEEE float32: TF32 off; ``bf16``: the
    model's forward under autocast, the noise float32 as in the loop)."""
    model.eval()
    with tf32_mode(False), autocast(precision, x.device):
        counts_selection = reference_sample_noise(model, x, n0, batch_size, sigma)
        c_a = int(counts_selection.argmax())
        counts_estimation = reference_sample_noise(model, x, n, batch_size, sigma)
    n_a = int(counts_estimation[c_a])
    radius = radius_from_counts(n_a, n, alpha, sigma)
    return (ABSTAIN, 0.0, n_a) if radius is None else (c_a, radius, n_a)


def art_certifier(model: torch.nn.Module, args: argparse.Namespace, shape: tuple[int, ...], device: torch.device):
    """IBM ART's ``PyTorchRandomizedSmoothing`` around ``model`` (N0 = its sample_size), or None when ART is
    not installed."""
    try:
        from art.estimators.certification.randomized_smoothing import PyTorchRandomizedSmoothing
    except ImportError:
        return None
    art = PyTorchRandomizedSmoothing(model, torch.nn.CrossEntropyLoss(), input_shape=shape, nb_classes=NUM_CLASSES,
                                     channels_first=True, device_type="gpu" if device.type == "cuda" else "cpu",
                                     sample_size=args.n0, scale=args.sigma, alpha=args.alpha)
    try:
        import statsmodels  # noqa: F401  (ART's Clopper-Pearson bound)
    except ImportError:  # the same one-sided Clopper-Pearson bound; microseconds next to the sampling
        print("note: statsmodels (ART's Clopper-Pearson bound) is missing: ART runs with crt-bench's equal bound")
        art._lower_confidence_bound = lambda n_a, n: lower_confidence_bound(int(n_a), int(n), args.alpha)
    return art


# --------------------------------------------------------------------------------------------------
# Variants
# --------------------------------------------------------------------------------------------------


class Variant:
    """One way of certifying: ``kind`` ``loop`` (the reference), ``art`` or ``engine`` (:class:`Smooth`)."""

    def __init__(self, name: str, kind: str, model: torch.nn.Module, args: argparse.Namespace, *,
                 precision: str = "fp32", compile: bool = False, art=None) -> None:
        self.name, self.kind, self.model, self.args = name, kind, model, args
        self.precision, self.compile, self.art = precision, compile, art
        self.smooth = None if kind != "engine" else Smooth(model, NUM_CLASSES, args.sigma, precision=precision,
                                                             compile=compile, noise_seed=args.seed)
        self.seconds = self.prepare_seconds = 0.0
        self.results: list[tuple[int, float]] = []

    def warm_up(self, images: torch.Tensor) -> None:
        """Excluded from the timing: the engine's forward at every batch shape of the timed chunks of
        ``images`` (folding, compilation, the ``fastest`` choice); the loops and ART certify one image."""
        start = time.perf_counter()
        if self.smooth is None:
            self.run(images[:1], 0, n0=10, n=self.args.ref_batch)
            self.results.clear()
        else:
            warm_up_engine(self.smooth, images, self.args.chunk, self.args.n0 + self.args.n, self.args.batch)
        self.prepare_seconds = time.perf_counter() - start

    def run(self, images: torch.Tensor, first: int, n0: int, n: int) -> None:
        if self.kind == "loop":
            for x in images:
                c, r, _ = reference_certify(self.model, x, n0, n, self.args.alpha, self.args.ref_batch,
                                            self.args.sigma, self.precision)
                self.results.append((c, r))
        elif self.kind == "art":
            self.art.sample_size = n0
            with tf32_mode(False):
                prediction, radius = self.art.certify(images.cpu().numpy(), n=n, batch_size=self.args.ref_batch)
            self.results.extend(zip(map(int, prediction), map(float, radius)))
        else:
            keys = range(first, first + len(images))
            self.results.extend(self.smooth.certify_many(images, n0, n, self.args.alpha, self.args.batch, keys))

    def used_batch(self) -> int:
        return self.args.ref_batch if self.smooth is None else int(self.smooth.last_batch_size or 0)

    def used_precision(self) -> str:
        return self.precision if self.smooth is None else self.smooth.precision


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
            variant.run(chunk, start, args.n0, args.n)
            synchronize(device)
            variant.seconds += time.perf_counter() - t0


def model_for(arch: str, device: torch.device, seed: int) -> torch.nn.Module:
    info = load_split("synthetic", "test", limit=1).info
    torch.manual_seed(seed)
    return build_model(arch, num_classes=NUM_CLASSES, in_chans=3, mean=info.mean, std=info.std).to(device).eval()


def variants_for(model: torch.nn.Module, args: argparse.Namespace, shape: tuple[int, ...],
                 device: torch.device) -> list[Variant]:
    variants = [Variant("loop fp32", "loop", model, args), Variant("loop bf16", "loop", model, args, precision="bf16")]
    art = art_certifier(model, args, shape, device) if args.art else None
    if args.art and art is None:
        print("note: IBM ART is not installed (pip install '.[bench]'): its certify is not timed")
    if art is not None:
        variants.append(Variant("ART", "art", model, args, art=art))
    for precision in args.precisions:
        variants.append(Variant(precision, "engine", model, args, precision=precision))
    if args.compile:
        compiled = [Variant(f"{p}+compile", "engine", model, args, precision=p, compile=True)
                    for p in (*args.precisions, "fastest")]
        for variant in compiled[1:]:  # one compilation per precision, shared
            variant.smooth._models = compiled[0].smooth._models
        variants += compiled
    return variants


def speed(args: argparse.Namespace, device: torch.device, env: dict) -> list[dict]:
    test = load_split("synthetic", "test")
    per_arch = dict(item.split("=") for item in args.arch_images)
    rows = []
    for arch in args.archs:
        images = test.x[: int(per_arch.get(arch, args.images))].to(device)
        model = model_for(arch, device, args.seed)
        variants = variants_for(model, args, tuple(images.shape[1:]), device)
        torch.manual_seed(args.seed)
        time_variants(variants, images, args, device)
        loop = variants[0]
        art = next((v for v in variants if v.kind == "art"), None)
        print(f"\n{arch}: {len(images)} images, N0={args.n0}, N={args.n}, sigma={args.sigma}, alpha={args.alpha} "
              f"({env['device']}, {torch.get_num_threads()} threads)")
        print(f"  {'variant':<16}{'prec':>6}{'batch':>6}{'s/image':>9}{'fwd/s':>8}{'vs loop':>9}{'vs ART':>8}"
              f"{'same pred':>10}{'max|dr|':>9}{'prepare s':>10}")
        for v in variants:
            per_image = v.seconds / len(images)
            ratio = loop.seconds / v.seconds
            vs_art = art.seconds / v.seconds if art else float("nan")
            fwd = len(images) * (args.n0 + args.n) / v.seconds
            same = float(np.mean([a[0] == b[0] for a, b in zip(v.results, loop.results)]))
            max_dr = float(np.max([abs(a[1] - b[1]) for a, b in zip(v.results, loop.results)]))
            print(f"  {v.name:<16}{v.used_precision():>6}{v.used_batch():>6}{per_image:>9.3f}{fwd:>8.0f}"
                  f"{ratio:>8.2f}x{vs_art:>7.2f}x{same:>10.2f}{max_dr:>9.4f}{v.prepare_seconds:>10.1f}")
            smooth = v.smooth
            rows.append({"kind": "speed", "arch": arch, "variant": v.name, "engine": {"loop": "reference", "art": "art"}
                         .get(v.kind, "crt-bench"), "precision": v.used_precision(),
                         "requested_precision": v.precision,
                         "tf32": False if smooth is None else smooth.tf32_in_force(device), "noise_dtype": "float32",
                         "compile": v.compile, "batch": v.used_batch(), "images": len(images), "n0": args.n0,
                         "n": args.n, "alpha": args.alpha, "sigma": args.sigma, "seconds": v.seconds,
                         "seconds_per_image": per_image, "images_per_s": 1 / per_image, "noisy_forwards_per_s": fwd,
                         "speedup_vs_reference": ratio, "speedup_vs_art": vs_art, "prepare_seconds": v.prepare_seconds,
                         "folded_batchnorms": 0 if smooth is None else smooth.folded_batchnorms,
                         "precision_timings": "" if smooth is None else repr(smooth.precision_timings),
                         "same_prediction_as_reference": same, "max_abs_radius_diff_vs_reference": max_dr,
                         "threads": torch.get_num_threads(), **env})
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
    parser.add_argument("--archs", nargs="+", default=["resnet20", "resnet110"])
    parser.add_argument("--n0", type=int, default=100)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--images", type=int, default=2, help="images certified per model and variant")
    parser.add_argument("--arch-images", nargs="*", default=["resnet110=1"], metavar="ARCH=K",
                        help="fewer (or more) images for some models (default: resnet110=1, ~6x ResNet-20's cost)")
    parser.add_argument("--chunk", type=int, default=1, help="images per interleaved timing chunk")
    parser.add_argument("--ref-batch", type=int, default=1000, help="the reference loop's batch size")
    parser.add_argument("--batch", type=int, default=None, help="the engine's batch size (default: its own choice)")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "tf32", "bf16", "fp16"])
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the compiled engine (fp32, bf16, fastest)")
    parser.add_argument("--art", action=argparse.BooleanOptionalAction, default=True,
                        help="also time IBM ART's certify (when installed)")
    parser.add_argument("--agree-arch", default="resnet20")
    parser.add_argument("--agree-steps", type=int, default=40)
    parser.add_argument("--agree-images", type=int, default=6)
    parser.add_argument("--agree-n", type=int, default=2000, help="N for the agreement check (default: 2000)")
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
