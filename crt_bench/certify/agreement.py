"""Does a lower-precision certification (bf16 autocast, torch.compile) certify what fp32 certifies?

A certification in bf16 is a statement about the smoothed bf16 classifier (:data:`crt_bench.config.choices.
NOISE_DTYPE`); the papers' figures are fp32's. :func:`check_agreement` certifies the first
``CertifyConfig.agreement_images`` images of a finished certification's subset again in IEEE fp32 with the
same per-image noise (keyed by seed and image index), compares them with the stored rows, and records in
the ``agreement`` table the share of images with the same prediction (abstentions included) and the
absolute radius differences. One row per (run, precision, compile, N, subset, seed, images): a second call
finds it and certifies nothing.
"""
from __future__ import annotations

import logging
import time
from datetime import datetime, timezone

import pandas as pd

from crt_bench.certify.driver import certify_dataset
from crt_bench.certify.resumable import CertKey
from crt_bench.config.certify import CertifyConfig
from crt_bench.config.choices import Precision
from crt_bench.config.subsets import parse_subset
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.provenance import environment, pick_device
from crt_bench.data.datasets import load_split
from crt_bench.models.files import load_model
from crt_bench.store.store import ResultsStore

REFERENCE = Precision.FP32.value
"""What every lower precision is compared with: IEEE float32, TF32 off, not compiled."""

KEY_COLUMNS = ("run_id", "precision", "compile", "n", "subset", "seed", "images")
"""What identifies an agreement check (a row with the same values is the same check, done)."""

log = logging.getLogger(__name__)


def compare(low: pd.DataFrame, reference: pd.DataFrame) -> dict[str, float | int]:
    """The agreement of two certifications' rows of the same images (joined on ``idx``).

    ``same_predict``: share of images with the same prediction (abstain = -1 counts as a prediction);
    ``radius_diff_mean`` / ``radius_diff_max``: absolute radius differences over the images;
    ``certified_both``: images both certify with the same class (radius > 0).
    """
    joined = low[["idx", "predict", "radius"]].merge(reference[["idx", "predict", "radius"]], on="idx",
                                                     suffixes=("", "_ref"), validate="one_to_one")
    if joined.empty or len(joined) != len(low) or len(joined) != len(reference):
        raise CrtBenchError(f"agreement: the two certifications cover different images ({len(low)} and "
                            f"{len(reference)} rows, {len(joined)} in common)")
    same = joined["predict"] == joined["predict_ref"]
    diff = (joined["radius"] - joined["radius_ref"]).abs()
    return dict(images=len(joined), same_predict=float(same.mean()), radius_diff_mean=float(diff.mean()),
                radius_diff_max=float(diff.max()),
                certified_both=int((same & (joined["predict"] >= 0) & (joined["radius"] > 0)).sum()))


def recorded(store: ResultsStore, key: dict) -> pd.DataFrame:
    """The agreement rows of ``key`` (:data:`KEY_COLUMNS`) already in the store."""
    rows = store.read("agreement", where={"run_id": key["run_id"]})
    for name in KEY_COLUMNS:
        if rows.empty or name not in rows:
            return rows.iloc[0:0]
        rows = rows[rows[name] == key[name]]
    return rows


def check_agreement(run_id: str, store: ResultsStore, ccfg: CertifyConfig, *, seed: int = 0,
                    data_dir: str | None = None, device: str = "auto") -> dict | None:
    """Certify the sample again in fp32, compare it with the run's stored certification, store the row.

    The run's certification under ``ccfg`` and ``seed`` must hold the sample's images (certify first).
    None when ``ccfg`` asks for no check (``CertifyConfig.checks_agreement``); the stored row when one exists.
    """
    if not ccfg.checks_agreement:
        return None
    ccfg.validate()
    key = dict(run_id=run_id, precision=ccfg.precision, compile=bool(ccfg.compile), n=int(ccfg.n),
               subset=ccfg.subset, seed=int(seed), images=int(ccfg.agreement_images))
    done = recorded(store, key)
    if not done.empty:
        return done.iloc[-1].to_dict()
    loaded = load_model(run_id, store.root)
    meta = loaded.meta
    sigma = float(meta["sigma"])
    test = load_split(meta["dataset"], "test", data_dir=data_dir, seed=int(seed))
    indices = parse_subset(ccfg.subset, len(test))[: ccfg.agreement_images]
    cert_id = CertKey(run_id=run_id, n0=ccfg.n0, n=ccfg.n, alpha=float(ccfg.alpha), sigma=sigma, subset=ccfg.subset,
                      precision=ccfg.precision, seed=int(seed)).cert_id
    rows = store.certification_rows(cert_id, missing_ok=True)
    low = rows[rows["idx"].isin(indices)] if not rows.empty else rows
    if len(low) < len(indices):
        raise CrtBenchError(f"agreement check of {run_id}: its certification {cert_id} holds {len(low)} of the "
                            f"{len(indices)} sample images; certify the run first")
    dev = pick_device(device)
    start = time.perf_counter()
    reference = certify_dataset(loaded.model.to(dev).eval(), test.x, test.y, sigma=sigma,
                                num_classes=meta["num_classes"], n0=ccfg.n0, n=ccfg.n, alpha=ccfg.alpha,
                                batch_size=ccfg.batch, indices=indices, seed=int(seed), progress=False,
                                precision=REFERENCE, compile=False)
    env = environment(dev)
    row = {**key, "chosen_precision": str(low["precision"].iloc[0]), "reference": REFERENCE, "sigma": sigma,
           **compare(low, reference), "seconds_per_image": float(low["seconds"].mean()),
           "reference_seconds_per_image": float(reference["seconds"].mean()),
           "wall_seconds": time.perf_counter() - start, "device": env["device"], "git_commit": env["git_commit"],
           "time": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    store.append("agreement", [row])
    log.info(f"agreement {run_id}: {row['precision']}{'+compile' if row['compile'] else ''} vs fp32 on "
             f"{row['images']} images: same prediction {row['same_predict']:.0%}, radius difference mean "
             f"{row['radius_diff_mean']:.4f}, max {row['radius_diff_max']:.4f}")
    return row
