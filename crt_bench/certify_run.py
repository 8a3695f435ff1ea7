"""Certify a trained run (or any crt-bench model file) on its test split, and import published logs.

Both write per-image rows to the ``certify`` table; curves and ACR are always derived from rows.
Each certification gets a ``cert_id``; imported logs get ``run_id = "import:<name>"``.
"""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from crt_bench.certify import certify_dataset, check_precision, parse_subset
from crt_bench.checkpoint import load_model
from crt_bench.cohen_log import read_cohen_log
from crt_bench.config import CertifyConfig, RunConfig
from crt_bench.data import load_split
from crt_bench.errors import CrtBenchError
from crt_bench.provenance import environment, pick_device
from crt_bench.results import ResultsStore

IMPORT_PREFIX = "import:"


def certify_run(
    source: str,
    store: ResultsStore,
    ccfg: CertifyConfig,
    *,
    sigma: float | None = None,
    data_dir: str | None = None,
    device: str = "auto",
    seed: int = 0,
    progress: bool = True,
    input_layer: str = "normalize",
    precision: str | None = None,
    compile: bool | None = None,
) -> tuple[str, pd.DataFrame]:
    """CERTIFY every image of ``ccfg.subset`` of the model's test split; returns (cert_id, rows).

    ``precision`` (``fp32``, ``bf16``, ``fp16``) autocasts the base classifier's forward pass (the
    noise is always float32) and ``compile`` wraps it in ``torch.compile``; see
    :class:`crt_bench.certify.Smooth`.  ``ccfg.batch=None`` lets the engine choose the batch size.
    Rows record the settings actually used: ``precision``, ``noise_dtype``, ``compile``, ``batch``.
    """
    ccfg.validate()
    precision = check_precision(precision or ccfg.precision)  # arguments override the config
    compile = ccfg.compile if compile is None else compile
    loaded = load_model(source, store.root, input_layer)
    meta = loaded.meta
    config_file = loaded.path.parent / "config.json"
    run_cfg = RunConfig.from_json(config_file.read_text()) if config_file.is_file() else None
    data_dir = data_dir or (run_cfg.data_dir if run_cfg else None)
    if sigma is None and meta.get("sigma") is None:
        raise CrtBenchError(f"{source} does not record its noise level; pass --sigma")
    sigma = float(sigma if sigma is not None else meta["sigma"])
    if not sigma > 0:
        raise CrtBenchError(f"sigma must be > 0, got {sigma}")
    dev = pick_device(device)
    test = load_split(meta["dataset"], "test", data_dir=data_dir, seed=seed)
    indices = parse_subset(ccfg.subset, len(test))
    model = loaded.model.to(dev).eval()
    torch.manual_seed(seed)
    run_id = meta.get("run_id") or str(source)
    cert_id = f"{run_id}@N{ccfg.n}-{uuid.uuid4().hex[:6]}"
    started = time.time()
    rows = certify_dataset(model, test.x, test.y, sigma=sigma, num_classes=meta["num_classes"], n0=ccfg.n0,
                           n=ccfg.n, alpha=ccfg.alpha, batch_size=ccfg.batch, indices=indices, progress=progress,
                           precision=precision, compile=compile)
    engine = dict(rows.attrs)
    env = environment(dev)
    rows.insert(0, "cert_id", cert_id)
    rows.insert(0, "run_id", run_id)
    rows = rows.assign(subset=ccfg.subset, seed=seed, precision=engine["precision"],
                       noise_dtype=engine["noise_dtype"], compile=bool(engine["compile"]),
                       batch=int(engine["batch_size"]), device=env["device"], git_commit=env["git_commit"],
                       source=str(loaded.path), time=datetime.fromtimestamp(started, timezone.utc).isoformat(timespec="seconds"))
    store.append("certify", rows)
    return cert_id, rows


def import_log(path: str | Path, name: str, store: ResultsStore, *, sigma: float | None = None,
               n0: int = 100, n: int = 100_000, alpha: float = 0.001) -> pd.DataFrame:
    """Store a published Cohen-format TSV log as a certification named ``name``."""
    if not name or any(c in name for c in "/\\@"):
        raise CrtBenchError(f"log name {name!r} must be non-empty and contain no '/', '\\' or '@'")
    existing = store.read("certify")
    if not existing.empty and (existing["cert_id"] == name).any():
        raise CrtBenchError(f"a certification named {name!r} already exists in {store.root}; choose another --name")
    rows = read_cohen_log(path)
    rows.insert(0, "cert_id", name)
    rows.insert(0, "run_id", IMPORT_PREFIX + name)
    rows = rows.assign(n0=n0, n=n, alpha=alpha, sigma=float("nan") if sigma is None else float(sigma),
                       subset="imported", seed=-1, precision="unknown", noise_dtype="unknown", device="unknown",
                       git_commit="", source=str(Path(path).resolve()),
                       time=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    store.append("certify", rows)
    return rows


def certification_rows(store: ResultsStore, cert_id: str) -> pd.DataFrame:
    rows = store.read("certify")
    match = rows[rows["cert_id"] == cert_id] if not rows.empty else rows
    if match.empty:
        raise CrtBenchError(f"no certification {cert_id!r} in {store.root}")
    return match
