"""The measured GPU figures the projected bill (:mod:`crt_bench.grid.bill`) is computed from, each with its source.

Every figure here was measured, not estimated; the bill says which of its numbers are these and which are
projected from them. Replace them (and their source) when a newer GPU check measures them.

* :data:`STEP_SECONDS`: one training step of each method at its recipe batch, bf16 autocast, on one H200,
  for ResNet-110 and ConvNeXt-Atto (the GPU check's "one training step of every method" tables; the README's
  H200 table: Gaussian ResNet-110 45.6 ms per 256-image step and the per-method ratios). CRT's teacher in that
  measurement is ResNet-110 (the grid's ResNet-20 teacher is cheaper: the bill's CRT figures are an upper bound).
* :data:`FORWARDS_PER_S`: noisy forwards/s of CERTIFY on ResNet-110 at batch 15,400, N = 100,000, per precision
  (the check's certification table; the README's: fp32 25,629, bf16 + torch.compile 131,043).
* :data:`GFLOPS`: forward GFLOPs of one 3x32x32 image per architecture (``crt-bench list archs --sizes``,
  torch's FlopCounterMode; ``crt_bench.models.stats.arch_stats``), and of the paper profile's DnCNN denoiser
  (17 x 64, the same counter on ``crt_bench.models.denoiser.DnCNN``).
* :data:`TIMING_PROBE_SECONDS`: the check's "train" step (the timing probes of every method on 2
  architectures, its warm-ups included).
"""
from __future__ import annotations

GPU = "NVIDIA H200"
CHECK = "benchmarks/results/gpu-check-2026-11-30-h200.md"
SIZES = "crt-bench list archs --sizes (torch FlopCounterMode, 3x32x32)"

STEP_SECONDS: dict[tuple[str, str], tuple[float, int]] = {
    # (method, arch): (seconds per loader batch, images per batch); bf16, recipe batch, one H200
    ("gaussian", "resnet110"): (0.04561, 256), ("consistency", "resnet110"): (0.09204, 256),
    ("crt", "resnet110"): (0.04938, 128), ("denoised", "resnet110"): (0.007543, 256),
    ("macer", "resnet110"): (0.04982, 64), ("smoothadv", "resnet110"): (1.417, 256),
    ("smoothmix", "resnet110"): (0.3972, 256), ("standard", "resnet110"): (0.03868, 256),
    ("gaussian", "convnext_atto"): (0.0205, 256), ("consistency", "convnext_atto"): (0.04852, 256),
    ("crt", "convnext_atto"): (0.0252, 128), ("denoised", "convnext_atto"): (0.006778, 256),
    ("macer", "convnext_atto"): (0.01994, 64), ("smoothadv", "convnext_atto"): (0.6756, 256),
    ("smoothmix", "convnext_atto"): (0.185, 256), ("standard", "convnext_atto"): (0.02095, 256),
}
STEP_ARCHS = ("resnet110", "convnext_atto")
"""The architectures :data:`STEP_SECONDS` measured (the others are projected from these two by FLOPs)."""

FORWARDS_PER_S: dict[tuple[str, str], float] = {
    # (arch, precision): noisy forwards per second of CERTIFY; "bf16+compile": bf16 autocast + torch.compile
    ("resnet110", "fp32"): 25_629.0, ("resnet110", "tf32"): 73_316.0, ("resnet110", "bf16"): 91_277.0,
    ("resnet110", "bf16+compile"): 131_043.0,
}
FORWARD_ARCH = "resnet110"
"""The architecture :data:`FORWARDS_PER_S` measured."""

GFLOPS: dict[str, float] = {
    "tiny_cnn": 0.003, "resnet110": 0.506, "resnet18": 1.111, "resnet20": 0.082, "densenet121": 1.777,
    "resnext26ts": 1.042, "dla46_c": 0.065, "mobilenetv2_100": 0.049, "efficientnet_b0": 0.064,
    "mobilenetv3_small_100": 0.011, "regnetx_002": 0.032, "vit_tiny_patch4_32": 0.730,
    "tf_efficientnetv2_b0": 0.119, "convnext_atto": 0.089, "convnextv2_atto": 0.089, "efficientvit_b0": 0.019,
    "fastvit_t8": 0.086, "mobilenetv4_conv_small": 0.032,
}
DENOISER_GFLOPS = 1.140
"""The paper profile's DnCNN (17 x 64) on one 3x32x32 image; a denoised model's forward is this plus its classifier's."""

PAPER_PROBE_BUDGET_S = 150.0
"""The paper protocol's probes on ResNet-110 (:func:`crt_bench.timing.grid.run_plan_timing`): not yet measured on a
GPU; the GPU check gives its paper step at most this (``benchmarks/gpu_check_paper.py``), so the bill counts it."""

TIMING_PROBE_SECONDS = (77.0, 2)
"""(seconds, architectures): the check's timing probes of every method on ResNet-110 and ConvNeXt-Atto."""
