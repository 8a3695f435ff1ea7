"""Selection of certifications for the tables: newest per line, method order and labels, generations."""
from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pandas as pd

from crt_bench.core.constants import IMPORT_PREFIX, TRANSFER_PROCEDURE
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.tf32 import device_label
from crt_bench.models.registry import get_arch
from crt_bench.store.query import newest
from crt_bench.store.store import ResultsStore

METHOD_ORDER = ["gaussian", "crt", "consistency", "smoothmix", "macer", "smoothadv", "denoised", "standard"]
METHOD_LABELS = {"gaussian": "Gaussian", "crt": "CRT", "consistency": "Consistency", "smoothmix": "SmoothMix",
                 "macer": "MACER", "smoothadv": "SmoothAdv", "denoised": "Denoised smoothing", "standard": "Standard"}


# -- selection -----------------------------------------------------------------------------------------
def _text(value: Any) -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return float("nan")
    return out


def _flag(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    try:
        return bool(value) and not (isinstance(value, float) and math.isnan(value))
    except (TypeError, ValueError):
        return False


def run_variant(run: Any) -> str:
    """A method's ``variant`` hyper-parameter (denoised smoothing: mse / stability), "" when it has none."""
    try:
        config = json.loads(_text(run.get("config")) or "{}")
    except ValueError:
        return ""
    hparams = config.get("hparams") if isinstance(config, dict) else None
    return str(hparams.get("variant", "")) if isinstance(hparams, dict) else ""


def method_label(method: str, teacher: str = "", teacher_method: str = "", variant: str = "") -> str:
    """The display name of a line or row: ``SmoothMix``, ``CRT (teacher resnet20)``, ``Denoised (mse)``, ..."""
    name = METHOD_LABELS.get(method, method)
    if variant:
        return f"{name} ({variant})"
    if method != "crt":
        return name
    detail = teacher or "unknown"
    if teacher_method and teacher_method != "smoothmix":
        detail += f", {teacher_method}-trained"
    return f"{name} (teacher {detail})"


def transferred(certs: pd.DataFrame) -> pd.Series:
    """Which certify rows are transferred certificates (``procedure == TRANSFER_PROCEDURE``); older stores lack it."""
    if "procedure" not in certs:
        return pd.Series(False, index=certs.index)
    return certs["procedure"].fillna("") == TRANSFER_PROCEDURE


def certifications(store: ResultsStore, certify: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The newest CERTIFY certification per run id (not a transferred one), with its run's columns; and the
    per-image rows per cert id.

    Returns ``(meta, rows)``. ``meta`` has one row per selected certification: ``cert_id, run_id,
    imported, time, sigma, N, images`` and, from the run (empty/NaN for imported logs and for
    certifications of models that are not runs of this store), ``method, arch, dataset, teacher
    (the teacher's arch), teacher_method (looked up from the teacher run, "" if unknown),
    teacher_run_id, teacher_dedicated, train_seconds, teacher_train_seconds, total_train_seconds,
    hours (total_train_seconds when present, else train_seconds, / 3600), profile, seed (training seed), device (with the
    TF32 state on a GPU, :func:`~crt_bench.core.tf32.device_label`; ``cert_device`` likewise),
    git_commit, status``. ``rows[cert_id]`` is that certification's per-image frame.
    """
    certs = store.read("certify") if certify is None else certify
    certs = certs[~transferred(certs)]  # a run's certification is its CERTIFY; transferred ones are extra
    if certs.empty:
        return pd.DataFrame(columns=["cert_id", "run_id", "imported"]), {}
    runs = store.runs()
    run_by_id = {r["run_id"]: r for r in runs.to_dict("records")} if not runs.empty else {}
    order = certs.assign(_order=np.arange(len(certs)))
    heads = []
    rows: dict[str, pd.DataFrame] = {}
    for cert_id, part in order.groupby("cert_id", sort=False):
        first = part.iloc[0]
        heads.append({"cert_id": cert_id, "run_id": first["run_id"], "time": _text(first.get("time")),
                      "_order": int(part["_order"].max())})
        rows[cert_id] = part.drop(columns="_order")
    head = pd.DataFrame(heads)
    out = []
    for _, h in newest(head, "run_id", order=["time", "_order"]).iterrows():
        part = rows[h["cert_id"]]
        run = run_by_id.get(h["run_id"])
        record: dict[str, Any] = {
            "cert_id": h["cert_id"], "run_id": h["run_id"], "imported": str(h["run_id"]).startswith(IMPORT_PREFIX),
            "time": h["time"], "_order": h["_order"],
            "sigma": _number(part["sigma"].iloc[0]) if "sigma" in part else float("nan"),
            "N": int(part["n"].iloc[0]) if "n" in part and not pd.isna(part["n"].iloc[0]) else -1,
            "images": len(part),
            "cert_device": (device_label(_text(part["device"].iloc[0]), part["tf32"].iloc[0] if "tf32" in part else None)
                            if "device" in part else ""),
            "cert_git_commit": _text(part["git_commit"].iloc[0]) if "git_commit" in part else "",
        }
        run = run or {}
        teacher_run = run_by_id.get(_text(run.get("teacher_run_id")), {})
        train_s = _number(run.get("train_seconds"))
        total_s = _number(run.get("total_train_seconds"))
        record.update({
            "method": _text(run.get("method")), "arch": _text(run.get("arch")), "dataset": _text(run.get("dataset")),
            "teacher": _text(run.get("teacher_arch")), "teacher_method": _text(teacher_run.get("method")),
            "teacher_run_id": _text(run.get("teacher_run_id")), "teacher_dedicated": _flag(run.get("teacher_dedicated")),
            "train_seconds": train_s, "teacher_train_seconds": _number(run.get("teacher_train_seconds")),
            "teacher_run_train_seconds": _number(teacher_run.get("train_seconds")),
            "total_train_seconds": total_s,
            "hours": (total_s if not math.isnan(total_s) else train_s) / 3600,
            "profile": _text(run.get("profile")), "seed": _number(run.get("seed")), "variant": run_variant(run),
            "device": device_label(_text(run.get("device")), run.get("tf32")),
            "git_commit": _text(run.get("git_commit")), "status": _text(run.get("status")),
        })
        if math.isnan(record["sigma"]) and run:
            record["sigma"] = _number(run.get("sigma"))
        out.append(record)
    meta = pd.DataFrame(out).sort_values(["time", "_order"], kind="stable").drop(columns="_order")
    return meta.reset_index(drop=True), rows


def newest_per_line(meta: pd.DataFrame, *, per_seed: bool = False) -> pd.DataFrame:
    """Trained runs only, the newest certification per (method, teacher, teacher_method, arch, sigma, dataset,
    profile), and per training seed too when ``per_seed``."""
    if meta.empty or "method" not in meta:
        return meta.iloc[0:0]
    ours = meta[~meta["imported"] & (meta["method"] != "")]
    keys = ["method", "teacher", "teacher_method", "arch", "sigma", "dataset", "profile"]
    keys += ["variant"] if "variant" in ours else []
    return newest(ours, keys + ["seed"] if per_seed else keys).reset_index(drop=True)


def arch_generation(arch: str) -> int:
    """The architecture's release year (registry), for ordering; unknown names sort last."""
    try:
        return get_arch(arch).generation
    except CrtBenchError:
        return 10_000


def _method_rank(method: str) -> int:
    return METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER)
