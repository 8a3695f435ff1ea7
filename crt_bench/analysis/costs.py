"""Measured cost of each certified model on both axes: its training hours and its certification hours.

A method can move its cost out of training into certification (denoised smoothing pays a denoiser's
forward on every noisy sample; a transferred certificate pays n_p samples of two models instead of N of
one): Figure 1's second panel and the cost table show both. One row per certification of a trained run:
the newest plain CERTIFY per run (:func:`~crt_bench.analysis.select.certifications`) and every
transferred certificate (``procedure == "transfer"``), with the run's training hours (a dedicated proxy
teacher's included, as everywhere), the certification's hours (the sum of its per-image seconds: the
images the profile certified) and the seconds per image.
"""
from __future__ import annotations

import pandas as pd

from crt_bench.analysis.matching import certification_key, describe_key
from crt_bench.analysis.select import certifications, method_label, newest_per_line, transferred
from crt_bench.analysis.uncertainty import acr_interval, paired_acr_difference

COST_COLUMNS = ["arch", "line", "method", "seed", "certification", "train_hours", "certify_hours", "images",
                "seconds_per_image", "N", "abstained"]
CERTIFY_SECONDS_LABEL = "with early abstention"
"""CERTIFY seconds are measured with exact early abstention (an image that cannot certify stops sampling early),
so they shrink with the share of images that abstain (``abstained``): say so wherever they are shown."""
COMPOSED_METHODS = ("denoised",)  # methods whose model is composed around a separately trained classifier


def pipeline_hours(record) -> float:
    """A certified model's training hours: its own (with a dedicated teacher's, ``hours``), plus, for a method
    composed around a classifier trained apart (denoised smoothing), that classifier's training hours, once."""
    hours = float(record["hours"])
    if record.get("method") in COMPOSED_METHODS and not record.get("teacher_dedicated"):
        classifier = record.get("teacher_train_seconds")
        if classifier is None or classifier != classifier:
            classifier = record.get("teacher_run_train_seconds", float("nan"))
        hours += float(classifier) / 3600  # NaN when the classifier's hours are unknown: not silently 0
    return hours


def abstained_share(rows: pd.DataFrame) -> float:
    """The share of a certification's images that abstained (``predict == -1``)."""
    return float((pd.to_numeric(rows["predict"], errors="coerce") == -1).mean()) if "predict" in rows else float("nan")


def _seconds(rows: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(rows["seconds"], errors="coerce") if "seconds" in rows else pd.Series(dtype=float)


def measured_costs(store) -> pd.DataFrame:
    """Rows :data:`COST_COLUMNS`, students and teachers alike (teachers are models too), arch then line."""
    certify = store.read("certify")
    if certify.empty:
        return pd.DataFrame(columns=COST_COLUMNS)
    meta, rows = certifications(store, certify)
    if meta.empty or "method" not in meta:
        return pd.DataFrame(columns=COST_COLUMNS)
    ours = meta[~meta["imported"] & (meta["method"] != "")]
    by_run = {r["run_id"]: r for r in ours.to_dict("records")}
    out = []
    for r in ours.to_dict("records"):
        seconds = _seconds(rows[r["cert_id"]])
        out.append({"arch": r["arch"], "line": method_label(r["method"], r["teacher"], r["teacher_method"], r.get("variant", "")),
                    "method": r["method"], "seed": r["seed"], "certification": "CERTIFY",
                    "train_hours": pipeline_hours(r), "certify_hours": float(seconds.sum()) / 3600,
                    "images": len(seconds), "seconds_per_image": float(seconds.mean()), "N": r["N"],
                    "abstained": abstained_share(rows[r["cert_id"]])})
    for cert_id, part in certify[transferred(certify)].groupby("cert_id", sort=False):
        r = by_run.get(str(part["run_id"].iloc[0]))
        if r is None:
            continue
        seconds = _seconds(part)
        n_p = int(part["n_p"].iloc[0]) if "n_p" in part else -1
        out.append({"arch": r["arch"], "line": method_label(r["method"], r["teacher"], r["teacher_method"], r.get("variant", "")),
                    "method": r["method"], "seed": r["seed"], "certification": f"transfer (n_p={n_p})",
                    "train_hours": pipeline_hours(r), "certify_hours": float(seconds.sum()) / 3600,
                    "images": len(seconds), "seconds_per_image": float(seconds.mean()), "N": r["N"],
                    "abstained": abstained_share(part)})
    return pd.DataFrame(out, columns=COST_COLUMNS)


REUSE_METHODS = ("crt", "smoothmix", "denoised")


def reuse_competitors(store) -> pd.DataFrame:
    """Per student architecture, CRT beside SmoothMix and denoised smoothing (each variant): ACR with its 95%
    bootstrap interval, the difference to CRT paired over common images, training hours (the run's own; a
    reused mse denoiser's hours are its own run's, counted once, shown as ``shared_hours``), and certification
    seconds per image and hours. One (the newest, lowest seed) certification per line, its ``seed`` shown."""
    meta, rows = certifications(store)
    lines = newest_per_line(meta, per_seed=True)
    if lines.empty:
        return pd.DataFrame()
    lines = lines[lines["method"].isin(REUSE_METHODS) & ~((lines["method"] == "crt") & (lines["teacher_method"] == "crt"))]
    runs = store.runs()
    init_of = dict(zip(runs["run_id"], runs.get("init_run_id", pd.Series([""] * len(runs))))) if not runs.empty else {}
    seconds_of = dict(zip(runs["run_id"], runs["train_seconds"])) if not runs.empty else {}
    out = []
    for arch, part in lines.groupby("arch", sort=False):
        if not {"crt", "denoised"} <= set(part["method"]):
            continue
        part = part.sort_values("seed", kind="stable").drop_duplicates(["method", "teacher", "variant"])
        crt_rows = rows[part[part["method"] == "crt"]["cert_id"].iloc[0]]
        for r in part.to_dict("records"):
            cert = rows[r["cert_id"]]
            seconds = _seconds(cert)
            shared = init_of.get(r["run_id"]) or ""
            shared_s = float(seconds_of.get(shared, float("nan"))) if shared else float("nan")
            seed = int(r["seed"]) if r["seed"] == r["seed"] else ""  # NaN: a run stored without its seed
            out.append({"arch": arch, "line": method_label(r["method"], r["teacher"], r["teacher_method"],
                                                          r.get("variant", "")), "seed": seed,
                        "acr": acr_interval(cert), "minus_crt": paired_acr_difference(cert, crt_rows)
                        if r["method"] != "crt" else None, "images": len(cert),
                        "train_hours": float(r["train_seconds"]) / 3600, "shared_hours": shared_s / 3600,
                        "pipeline_hours": pipeline_hours(r), "abstained": abstained_share(cert),
                        "certify_seconds_per_image": float(seconds.mean()),
                        "certify_hours": float(seconds.sum()) / 3600,
                        "certification": describe_key(certification_key(cert), float(r["sigma"]))})
    return pd.DataFrame(out)
