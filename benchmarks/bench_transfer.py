"""Certificate transfer vs plain CERTIFY of a CRT student: seconds per image, ACR, changed radii.

A teacher (Gaussian augmentation) and a CRT student of it are trained briefly on the synthetic data (CIFAR
shape; ``--dataset`` may name another), the teacher is certified with CERTIFY (N0, N, alpha), and the student
twice on the same images, seed and sigma: with CERTIFY, and by transfer from the teacher's certification
(``crt-bench certify STUDENT --transfer-from CERT``: ``n_p`` draws of both models per image, Ugare et al.
2024).  Seconds per image are the rows' ``seconds`` (the sampling's wall time; a transfer spends nothing
on images its teacher abstained on).  ACR comes with a 95% bootstrap interval over images, and the
transfer's ACR minus plain CERTIFY's with a paired one; ``radius_changed`` is the fraction of images whose
transferred radius differs from the student's CERTIFY radius, ``decision_changed`` the fraction where one
abstains and the other does not.

Writes results/bench/transfer-<time>.parquet (one row per certification).

    python benchmarks/bench_transfer.py                       # CPU: about a minute
    python benchmarks/bench_transfer.py --n 100000 --n-p 1000 --images 500 --epochs 20 --arch resnet20   # a GPU
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from crt_bench.analysis.uncertainty import acr_interval, paired_acr_difference
from crt_bench.certify.resumable import certify_run
from crt_bench.certify.stats import ABSTAIN
from crt_bench.certify.transfer_run import TransferConfig, transfer_run
from crt_bench.config.certify import CertifyConfig
from crt_bench.core.provenance import environment, pick_device
from crt_bench.store.bench import write_bench_table
from crt_bench.store.store import ResultsStore
from crt_bench.train.resolve import resolve_run_config
from crt_bench.train.trainer import train_run


def measure(args: argparse.Namespace, root: Path) -> pd.DataFrame:
    store = ResultsStore(root)
    common = dict(profile="smoke", dataset=args.dataset, sigma=args.sigma, epochs=args.epochs,
                  train_limit=args.train_limit, test_limit=args.images, device=args.device, seed=args.seed)
    teacher = train_run(resolve_run_config("gaussian", args.arch, **common), store, progress=False)
    student = train_run(resolve_run_config("crt", args.arch, teacher=teacher, **common), store, progress=False)
    ccfg = CertifyConfig(n0=args.n0, n=args.n, alpha=args.alpha, batch=args.batch, subset=f"range:0:{args.images}")
    kw = dict(device=args.device, seed=args.seed, progress=False)
    teacher_id, teacher_rows = certify_run(teacher, store, ccfg, **kw)
    _, plain = certify_run(student, store, ccfg, **kw)
    _, moved = transfer_run(student, store, teacher_id,
                            TransferConfig(n_p=args.n_p, alpha_zeta=args.alpha_zeta, batch=args.batch,
                                           subset=ccfg.subset), **kw)
    columns = ["idx", "predict", "radius"]
    pairs = plain[columns].merge(moved[columns], on="idx", suffixes=("", "_t"))
    radius_changed = float(np.mean(~np.isclose(pairs["radius"], pairs["radius_t"], rtol=0, atol=1e-12)))
    decision_changed = float(np.mean((pairs["predict"] == ABSTAIN) != (pairs["predict_t"] == ABSTAIN)))
    difference = paired_acr_difference(moved, plain)
    env = environment(pick_device(args.device))
    rows = []
    for name, frame in (("teacher-certify", teacher_rows), ("student-certify", plain), ("student-transfer", moved)):
        acr = acr_interval(frame)
        rows.append(dict(
            certification=name, arch=args.arch, dataset=args.dataset, sigma=args.sigma, images=len(frame),
            n0=args.n0, n=args.n, alpha=args.alpha, n_p=args.n_p if name == "student-transfer" else 0,
            alpha_zeta=float(frame["alpha_zeta"].iloc[0]) if name == "student-transfer" else float("nan"),
            seconds_per_image=float(frame["seconds"].mean()), acr=acr.estimate, acr_low=acr.low, acr_high=acr.high,
            certified=float(np.mean(frame["predict"] != ABSTAIN)),
            speedup_over_certify=float(plain["seconds"].mean() / frame["seconds"].mean()),
            radius_changed=radius_changed if name == "student-transfer" else float("nan"),
            decision_changed=decision_changed if name == "student-transfer" else float("nan"),
            acr_minus_certify=difference.estimate if name == "student-transfer" else float("nan"),
            acr_minus_certify_low=difference.low if name == "student-transfer" else float("nan"),
            acr_minus_certify_high=difference.high if name == "student-transfer" else float("nan"),
            device=env["device"], git_commit=env["git_commit"]))
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", default="tiny_cnn")
    parser.add_argument("--dataset", default="synthetic")
    parser.add_argument("--sigma", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=512)
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--n0", type=int, default=50)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--alpha", type=float, default=0.001)
    parser.add_argument("--n-p", type=int, default=200)
    parser.add_argument("--alpha-zeta", type=float, default=None, help="default: the teacher's alpha")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("results/bench"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-transfer-") as tmp:
        df = measure(args, Path(tmp) / "results")
    with pd.option_context("display.width", 200, "display.max_columns", 30):
        print(df[["certification", "images", "seconds_per_image", "speedup_over_certify", "acr", "acr_low", "acr_high",
                  "certified", "radius_changed", "decision_changed", "acr_minus_certify"]].to_string(index=False))
    print(f"written {write_bench_table(df, args.out, 'transfer')}")


if __name__ == "__main__":
    main()
