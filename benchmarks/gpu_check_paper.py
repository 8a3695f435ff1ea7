"""The GPU check's ``paper`` step: the slowdown table's methods timed in the paper protocol.

crt_bench.timing.paper (fp32, TF32 off, a DataLoader over CIFAR-shaped uint8 images with RandomCrop(32, 4)
and flip, each official script's loader workers, .item() per step, its per-epoch test pass) on ResNet-110 at
each recipe's batch size: whole epochs of standard training at 150 x 256 and 200 x 128, Gaussian and
SmoothMix; 200 MACER batches; 20 batches each of SmoothAdv m = 4 and m = 8 (projected to an epoch). One
measurement each, cheapest first, each row written as soon as it is measured (the step's time limit
keeps what it measured); ratios are quotients of epoch and recipe seconds (no interval), with GPU
kernel-busy time beside wall-clock (torch.profiler), against the paper's 46.20 / 20.86 / 4.97 and the
baseline-free 9.30 (SmoothAdv / SmoothMix) and 4.20 (MACER / SmoothMix).
"""
from __future__ import annotations

import math
import traceback
from pathlib import Path

import torch

EPOCH = "epoch"  # a whole epoch at the probe's batch size
# (label, method, recipe, hyper-parameter overrides, loader batches: EPOCH or a SIZES key)
PAPER_JOBS = [("standard 150x256", "standard", "", {}, EPOCH), ("standard 200x128", "standard", "200x128", {}, EPOCH),
              ("gaussian 150x256", "gaussian", "", {}, EPOCH), ("macer", "macer", "", {}, "macer_batches"),
              ("smoothadv m=4", "smoothadv", "", {"m": "4"}, "smoothadv_batches"),
              ("smoothadv m=8", "smoothadv", "", {"m": "8"}, "smoothadv_batches"), ("smoothmix", "smoothmix", "", {}, EPOCH)]
SIZES = {  # arch, batch (None: each recipe's), train and test images, loader workers (None: the scripts')
    "gpu": dict(arch="resnet110", batch=None, train=50_000, test=10_000, workers=None, macer_batches=200,
                smoothadv_batches=20),
    # seconds on a CPU: the suite's check (an epoch of 2 batches; MACER and SmoothAdv 1, projected)
    "cpu": dict(arch="tiny_cnn", batch=4, train=8, test=4, workers=0, macer_batches=1, smoothadv_batches=1),
}


def paper_rows(mode: str, work: Path, write_rows) -> list[dict]:
    from crt_bench.core.provenance import pick_device
    from crt_bench.timing.paper import prepare_paper
    from crt_bench.timing.probe import ProbeConfig, kernel_seconds

    sizes = SIZES[mode]
    device = pick_device("cuda" if mode == "gpu" else "cpu")
    torch.manual_seed(0)
    rows: list[dict] = []
    for label, method, recipe, sets, batches in PAPER_JOBS:
        try:
            cfg = ProbeConfig(batches=1, warmup=1, repeats=1, batch_size=sizes["batch"], train_images=sizes["train"],
                              test_images=sizes["test"], protocol="paper", amp=False, tf32=False,
                              loader_workers=sizes["workers"], hparams={method: sets} if sets else {})
            probe = prepare_paper(method, sizes["arch"], cfg=cfg, device=device, recipe=recipe)
            k = math.ceil(sizes["train"] / probe.batch) if batches == EPOCH else sizes[batches]
            probe.cfg = cfg = type(cfg)(**{**cfg.__dict__, "batches": k})
            seconds = probe.time_batches(k)
            probe.kernel_seconds_per_batch = kernel_seconds(probe)
            rows.append({"stage": "paper", "variant": label, **probe.row([seconds]), "status": "ok"})
        except Exception as err:  # the next probe still runs
            traceback.print_exc()
            rows.append({"stage": "paper", "variant": label, "method": method, "arch": sizes["arch"],
                         "status": f"failed: {type(err).__name__}: {err}"})
        write_rows(with_ratios(rows), work / "paper.csv")
        print(f"  paper: {label} {rows[-1]['status']}", flush=True)
    return rows


def with_ratios(rows: list[dict]) -> list[dict]:
    """Each measured row's recipe ratio to Gaussian and to both standard recipes, and to SmoothMix, beside
    the paper's figures."""
    from crt_bench.report.slowdown import PAPER_BASELINE_FREE, PAPER_SLOWDOWN

    hours = {r["variant"]: r["recipe_hours"] for r in rows if r.get("status") == "ok"}
    out = []
    for r in rows:
        r = dict(r)
        for name, base in (("gaussian", "gaussian 150x256"), ("standard_150x256", "standard 150x256"),
                           ("standard_200x128", "standard 200x128"), ("smoothmix", "smoothmix")):
            ok = r.get("status") == "ok" and base in hours
            r[f"x_{name}"] = r["recipe_hours"] / hours[base] if ok else float("nan")
        r["paper_x_standard"] = PAPER_SLOWDOWN.get(r.get("method", ""), float("nan"))
        r["paper_x_smoothmix"] = PAPER_BASELINE_FREE.get((r.get("method", ""), "smoothmix"), float("nan"))
        out.append(r)
    return out


def run_paper(mode: str, work: Path, write_rows) -> int:
    rows = paper_rows(mode, work, write_rows)
    return 0 if all(r["status"] == "ok" for r in rows) else 1
