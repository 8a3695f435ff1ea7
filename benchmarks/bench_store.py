"""The results store at paper size: "is this job certified?" and the summary's full read, before and after.

Builds a synthetic store in a temporary folder the way crt-bench up to the partitioned store wrote it
(the legacy flat layout, one parquet part per append): per model, ``runs`` 2 parts ("running",
"finished"), ``epochs`` one part per epoch, ``certify`` one part per 64 images (the engine's flush),
``certifications`` 2 parts ("running", "finished").  Then times, median of ``--repeats``:

(a) "is job K certified?": ``ResultsStore.finished_run(K)`` then ``certification_states(run_id=...)``
    (what the grid's decide step asks);
(b) ``summary_table(store)``: the work of ``crt-bench summary`` (every ``certify`` row, every run);

both through the same store code, on the flat store (every part is opened, as before the partitioned
store) and again after ``ResultsStore.compact_all()`` (legacy migration + compaction, timed too).  The goal: each
query under 1 s, and (a) independent of the number of other runs: compare ``--models 10`` with 50.
Rows go to ``results/bench/store-<time>.parquet`` (``write_bench_table``).

    python benchmarks/bench_store.py                    # 50 models x 10,000 images x 200 epochs
    python benchmarks/bench_store.py --models 10        # the same with fewer other runs
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from crt_bench.analysis.summary import summary_table
from crt_bench.certify.resumable import FLUSH_IMAGES  # the certification engine's part size
from crt_bench.store.bench import write_bench_table
from crt_bench.store.store import ResultsStore


class FlatWriter:
    """Legacy flat parts, named in write order as ``ResultsStore.append`` named them."""

    def __init__(self, root: Path) -> None:
        self.root, self.count = root / "tables", 0

    def part(self, table: str, rows: pa.Table) -> None:
        self.count += 1
        folder = self.root / table
        folder.mkdir(parents=True, exist_ok=True)
        pq.write_table(rows, folder / f"20260101T000000.{self.count:09d}-{uuid.uuid4().hex[:12]}.parquet")


def run_id(model: int) -> str:
    return f"crt-arch{model:03d}-cifar10-s0.25-20260101-000000-{model:06d}"


def build(root: Path, models: int, images: int, epochs: int) -> int:
    """Write the synthetic flat store; returns the number of part files."""
    writer, rng = FlatWriter(root), np.random.default_rng(0)
    for model in range(models):
        rid, job = run_id(model), job_key(model)
        run = {"run_id": rid, "job_key": job, "method": "crt", "arch": f"arch{model:03d}", "dataset": "cifar10",
               "sigma": 0.25, "teacher": "smoothmix", "epochs": epochs, "batch_size": 256, "seed": 0,
               "profile": "paper", "device": "NVIDIA H200", "config": "{}" * 200, "precision": "bf16",
               "compile": True, "tf32": False, "error": "", "start_time": "2026-01-01T00:00:00"}
        writer.part("runs", pa.Table.from_pylist([{**run, "status": "running", "epochs_done": 0, "updated": 1.0}]))
        epoch_rows = pa.table({"run_id": [rid] * epochs, "epoch": np.arange(1, epochs + 1), "lr": rng.random(epochs),
                               "loss": rng.random(epochs), "seconds": rng.random(epochs) * 60,
                               "samples_per_s": rng.random(epochs) * 5e4, "optimizer_steps": np.full(epochs, 196),
                               "noisy_test_acc": rng.random(epochs), "profiled": np.zeros(epochs, bool),
                               "time": ["2026-01-01T00:00:00"] * epochs})
        for epoch in range(epochs):
            writer.part("epochs", epoch_rows.slice(epoch, 1))
        writer.part("runs", pa.Table.from_pylist([{**run, "status": "finished", "epochs_done": epochs,
                                                   "train_seconds": 3600.0, "end_time": "2026-01-01T01:00:00",
                                                   "updated": 2.0}]))
        cert_id = f"{rid}@N100000-{model:08x}"
        state = {"key_run_id": rid, "key_n0": 100, "key_n": 100_000, "key_alpha": 0.001, "key_sigma": 0.25,
                 "key_subset": "all", "key_precision": "bf16", "key_seed": 0, "cert_id": cert_id, "run_id": rid,
                 "images": images, "shard": "", "tf32": False, "error": ""}
        writer.part("certifications", pa.Table.from_pylist([{**state, "status": "running", "images_done": 0,
                                                             "updated": 3.0}]))
        correct = rng.random(images) < 0.6
        certified = pa.table({
            "run_id": [rid] * images, "cert_id": [cert_id] * images, "idx": np.arange(images),
            "label": rng.integers(0, 10, images), "predict": rng.integers(0, 10, images),
            "radius": rng.random(images) * correct, "correct": correct.astype(np.int64),
            "seconds": rng.random(images), "n0": np.full(images, 100), "n": np.full(images, 100_000),
            "alpha": np.full(images, 0.001), "sigma": np.full(images, 0.25), "subset": ["all"] * images,
            "seed": np.zeros(images, np.int64), "precision": ["bf16"] * images, "noise_dtype": ["float32"] * images,
            "compile": np.ones(images, bool), "batch": np.full(images, 1000), "tf32": np.zeros(images, bool),
            "device": ["NVIDIA H200"] * images, "git_commit": ["29f6d53"] * images,
            "source": [f"/results/runs/{rid}/model.pt"] * images, "time": ["2026-01-01T02:00:00"] * images})
        for start in range(0, images, FLUSH_IMAGES):
            writer.part("certify", certified.slice(start, FLUSH_IMAGES))
        writer.part("certifications", pa.Table.from_pylist([{**state, "status": "finished", "images_done": images,
                                                             "updated": 4.0}]))
    return writer.count


def job_key(model: int) -> str:
    return f"crt/arch{model:03d}/s0.25"


def certified(store: ResultsStore, job: str) -> bool:
    """Is job K certified? Its newest finished run, then that run's certification states."""
    run = store.finished_run(job)
    return run is not None and bool(store.certification_states(run_id=run)["status"].eq("finished").any())


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, object]:
    seconds, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", type=int, default=50)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-store-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        files = build(root, args.models, args.images, args.epochs)
        print(f"built {files} flat parts ({args.models} models x {args.images} images, {args.epochs} epochs) "
              f"in {time.perf_counter() - start:.1f} s")
        store, job = ResultsStore(root), job_key(args.models // 2)
        before_a, answer_before = timed(lambda: certified(store, job), args.repeats)
        before_b, summary_before = timed(lambda: summary_table(store), args.repeats)
        start = time.perf_counter()
        files_before, files_after = store.compact_all()
        compact_seconds = time.perf_counter() - start
        after_a, answer_after = timed(lambda: certified(store, job), args.repeats)
        after_b, summary_after = timed(lambda: summary_table(store), args.repeats)
    if answer_before is not True or answer_after is not True or not summary_before.equals(summary_after):
        raise SystemExit(f"the two layouts disagree: certified {answer_before} / {answer_after}, "
                         f"summary equal: {summary_before.equals(summary_after)}")
    print(f"compact_store: {files_before} parts -> {files_after} parts in {compact_seconds:.1f} s")
    print(f"{'query':<34}{'before s':>10}{'after s':>10}{'ratio':>9}")
    for query, before, after in (("is job K certified?", before_a, after_a),
                                 ("summary_table (crt-bench summary)", before_b, after_b)):
        print(f"{query:<34}{before:>10.3f}{after:>10.3f}{before / after:>8.1f}x")
        rows.append({"query": query, "models": args.models, "images": args.images, "epochs": args.epochs,
                     "files_before": files_before, "files_after": files_after, "seconds_before": before,
                     "seconds_after": after, "ratio": before / after, "compact_seconds": compact_seconds,
                     "repeats": args.repeats, "load_avg_before": load_before, "load_avg_after": os.getloadavg()[0]})
    print(f"written {write_bench_table(rows, args.out, 'store')}")


if __name__ == "__main__":
    main()
