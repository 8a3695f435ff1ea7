"""Certify a trained run (or any crt-bench model file) on its test split, and import published logs.

Both write per-image rows to the ``certify`` table; curves and ACR are always derived from rows.
Imported logs get ``run_id = "import:<name>"``.

A certification of a run is resumable.  Its ``cert_id`` is a function of what determines its rows,
the :class:`CertKey` (run, N0, N, alpha, sigma, subset, precision, seed), and every image's noise is
keyed by (seed, image index) (:mod:`crt_bench.certify.stream`), so running the same certify command
again continues where the last one stopped and ends with exactly the rows of an uninterrupted run.
Rows are appended as images finish, a part every ``flush_images`` images or ``flush_seconds`` seconds:
a kill loses at most that much work.  One process at a time drives a certification (a lock file next
to the run, :mod:`crt_bench.store.locks`), and each start, interruption and end is a row of the
``certifications`` table (latest row per cert_id = its state).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import ClassVar

import pandas as pd
import torch

from crt_bench.certify.driver import EngineSettings, iter_certify
from crt_bench.certify.precision import uses_tf32
from crt_bench.certify.shards import ShardSpec
from crt_bench.config.certify import CertifyConfig
from crt_bench.config.choices import Precision, check_precision
from crt_bench.config.run import RunConfig
from crt_bench.config.subsets import parse_subset
from crt_bench.core.checks import check_sigma
from crt_bench.core.errors import CrtBenchError, DiskFull
from crt_bench.core.provenance import environment, pick_device
from crt_bench.core.states import RunStatus
from crt_bench.core.tf32 import check_tf32, in_force_under
from crt_bench.data.datasets import load_split
from crt_bench.data.split import Split
from crt_bench.models.denoiser import DenoiserConfig, check_denoiser_sigma
from crt_bench.models.files import LoadedModel, load_model
from crt_bench.store.locks import ProcessLock, cert_lock_name
from crt_bench.store.store import ResultsStore

FLUSH_IMAGES = 64
"""A part of the certify table is written at least every this many certified images ..."""
FLUSH_SECONDS = 300.0
"""... and every this many seconds (at N = 100,000 one CIFAR-10 image takes seconds on a GPU)."""
COMPACTED = ("certify", "certifications")
"""The tables whose partition of the run is compacted when a certification finishes."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CertKey:
    """What determines a certification's rows; equal keys are the same certification (resumed)."""

    run_id: str
    n0: int
    n: int
    alpha: float
    sigma: float
    subset: str
    precision: str
    seed: int

    ID_TAG: ClassVar[str] = ""  # before the digest: "t" marks a transferred certification (TransferKey)

    @property
    def cert_id(self) -> str:
        """``<run_id>@N<n>-<tag><digest>``: ``@N`` lets run_id_of find the run; the digest is over every field."""
        digest = hashlib.blake2b(json.dumps(asdict(self), sort_keys=True).encode(), digest_size=4).hexdigest()
        return f"{self.run_id}@N{self.n}-{self.ID_TAG}{digest}"

    @property
    def lock_name(self) -> str:
        return cert_lock_name(self.cert_id)


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
    flush_images: int = FLUSH_IMAGES,
    flush_seconds: float = FLUSH_SECONDS,
    shard: ShardSpec | None = None,
) -> tuple[str, pd.DataFrame]:
    """CERTIFY every image of ``ccfg.subset`` of the model's test split; returns (cert_id, all its rows).

    Images already certified under the same :class:`CertKey` are skipped (resume).  ``precision``
    (``fp32``, ``tf32``, ``bf16``, ``fp16``) sets the base classifier's forward pass (the noise is always
    float32; ``tf32`` needs an Ampere+ GPU and is refused elsewhere before any work) and ``compile``
    wraps it in ``torch.compile``; see :class:`crt_bench.certify.smooth.Smooth`.  ``ccfg.batch=None`` lets the
    engine choose the batch size.  Rows record the settings actually used: ``precision``,
    ``noise_dtype``, ``compile``, ``batch``, ``tf32`` (TF32 in force; also in the certifications table).

    ``shard`` certifies only that shard's images (:mod:`crt_bench.certify.shards`) under the same key
    and cert_id, holding the shard's own lock; the rows returned are the shard's.  An unsharded call
    that finds every image done (the shards did them) records the certification as finished.
    """
    ccfg.validate()
    precision = check_precision(precision or ccfg.precision)  # arguments override the config
    compile = ccfg.compile if compile is None else compile
    if flush_images < 1 or not flush_seconds > 0:
        raise CrtBenchError(f"flush_images must be >= 1 and flush_seconds > 0, got {flush_images}, {flush_seconds}")
    loaded = load_model(source, store.root, input_layer)
    meta = loaded.meta
    config_file = loaded.path.parent / "config.json"
    run_cfg = RunConfig.from_json(config_file.read_text()) if config_file.is_file() else None
    data_dir = data_dir or (run_cfg.data_dir if run_cfg else None)
    if sigma is None and meta.get("sigma") is None:
        raise CrtBenchError(f"{source} does not record its noise level; pass --sigma")
    sigma = check_sigma(sigma if sigma is not None else meta["sigma"])
    if "denoiser" in meta:  # denoised smoothing: the denoiser removes the noise level it was trained on
        check_denoiser_sigma(DenoiserConfig.from_meta(meta["denoiser"]), sigma, f"certifying {source} at sigma {sigma:g}")
    run_id = meta.get("run_id") or str(source)
    key = CertKey(run_id=run_id, n0=ccfg.n0, n=ccfg.n, alpha=float(ccfg.alpha), sigma=sigma, subset=ccfg.subset,
                  precision=precision, seed=int(seed))
    dev = pick_device(device)
    check_tf32(uses_tf32(precision), dev, "--precision tf32")
    test = load_split(meta["dataset"], "test", data_dir=data_dir, seed=key.seed)
    indices = parse_subset(key.subset, len(test))  # bad input is refused before anything is written
    lock, what = store.certification_lock(run_id, key.cert_id), f"certification {key.cert_id}"
    if shard is not None:
        indices, what = shard.select(indices), f"{what} shard {shard.label}"
        lock = lock.with_name(shard.lock_name(lock.name))
    with ProcessLock(lock, what):
        return _certify_locked(key, loaded, store, ccfg, test, indices, dev, progress=progress, compile=compile,
                               flush_images=flush_images, flush_seconds=flush_seconds,
                               shard="" if shard is None else shard.label)


def _certify_locked(key: CertKey, loaded: LoadedModel, store: ResultsStore, ccfg: CertifyConfig, test: Split,
                    indices: list[int], dev: torch.device, *, progress: bool, compile: bool, flush_images: int,
                    flush_seconds: float, shard: str = "") -> tuple[str, pd.DataFrame]:
    meta, cert_id = loaded.meta, key.cert_id
    precision = key.precision
    if precision == Precision.FASTEST.value:  # a resumed run keeps the precision chosen before
        stored = store.certification_rows(cert_id, missing_ok=True)
        if len(stored) and "precision" in stored:
            precision = str(stored["precision"].iloc[0])
    state = {**{f"key_{k}": v for k, v in asdict(key).items()}, "cert_id": cert_id, "run_id": key.run_id,
             "images": len(indices), "shard": shard, "tf32": in_force_under(uses_tf32(key.precision), dev)}

    def rows(todo: list[int]) -> Iterator[pd.DataFrame]:
        model = loaded.model.to(dev).eval()
        env = environment(dev)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for frame, engine in iter_certify(model, test.x, test.y, sigma=key.sigma, num_classes=meta["num_classes"],
                                          n0=key.n0, n=key.n, alpha=key.alpha, batch_size=ccfg.batch, indices=todo,
                                          seed=key.seed, progress=progress, precision=precision, compile=compile):
            yield stamped(frame, engine, key.run_id, cert_id, env, subset=key.subset, seed=key.seed, procedure="certify",
                          source=str(loaded.path), time=started)

    return store_resumably(store, state, indices, rows, progress=progress, flush_images=flush_images,
                           flush_seconds=flush_seconds, shard=shard)


def stamped(frame: pd.DataFrame, engine: EngineSettings, run_id: str, cert_id: str, env: dict,
            **columns: object) -> pd.DataFrame:
    """A driver's frame as rows of the certify table: ids first, then the ``engine`` settings it was certified
    with, the device and commit of ``env`` (:func:`~crt_bench.core.provenance.environment`) and ``columns``."""
    frame.insert(0, "cert_id", cert_id)
    frame.insert(0, "run_id", run_id)
    return frame.assign(precision=engine.precision, noise_dtype=engine.noise_dtype, compile=engine.compile,
                        batch=engine.batch_size, tf32=engine.tf32, device=env["device"], git_commit=env["git_commit"],
                        **columns)


def store_resumably(store: ResultsStore, state: dict, indices: list[int],
                    rows: Callable[[list[int]], Iterator[pd.DataFrame]], *, progress: bool, flush_images: int,
                    flush_seconds: float, shard: str = "") -> tuple[str, pd.DataFrame]:
    """Append ``rows(todo)`` (the images of ``indices`` not yet in the certify table) part by part; record states.

    ``state`` is the certification's row of the certifications table less its status (``cert_id``, ``run_id``,
    ``key_*``, ...).  Rows are appended every ``flush_images`` images or ``flush_seconds`` seconds; an
    interruption keeps what was certified and records the certification as interrupted (the same command
    continues), another error as failed.  Returns (cert_id, every row of ``indices`` in subset order).
    """
    cert_id, run_id = str(state["cert_id"]), str(state["run_id"])
    done = set(store.certification_rows(cert_id, missing_ok=True)["idx"].tolist()) & set(indices)
    todo = [i for i in indices if i not in done]
    if not todo:
        log.info(f"certification {cert_id}{' shard ' + shard if shard else ''} is complete ({len(indices)} images); "
                 "nothing to do")
        if not shard and _latest_status(store, cert_id, run_id) != RunStatus.FINISHED:  # its shards did every image
            _state_row(store, state, RunStatus.FINISHED, len(indices))
            store.compact_run(run_id, COMPACTED)
        return cert_id, _ordered(store.certification_rows(cert_id), indices)
    if done:
        log.info(f"certification {cert_id}: {len(done)} of {len(indices)} images already certified; "
                 f"continuing with the other {len(todo)}")
    _state_row(store, state, RunStatus.RUNNING, len(done))
    pending: list[pd.DataFrame] = []
    written = len(done)
    last_flush = time.monotonic()

    def flush() -> None:
        nonlocal pending, written, last_flush
        if pending:
            part = pd.concat(pending, ignore_index=True)
            store.append("certify", part)
            written += len(part)
            if not progress:  # no bar (a grid job): a line per part, which the grid's console follows
                log.info(f"  certified {written}/{len(indices)} images ({cert_id})")
        pending, last_flush = [], time.monotonic()

    try:
        for frame in rows(todo):
            if frame.empty:
                continue
            pending.append(frame)
            if sum(map(len, pending)) >= flush_images or time.monotonic() - last_flush >= flush_seconds:
                flush()
        flush()
    except BaseException as err:
        kept = _unless_disk_full(flush)  # the images certified so far are final: keep them
        full = err if isinstance(err, DiskFull) else kept
        # SystemExit: submitit's requeue on a time limit or preemption exits the job mid-certification.
        status = RunStatus.INTERRUPTED if isinstance(err, (KeyboardInterrupt, SystemExit)) or full else RunStatus.FAILED
        detail = "".join(traceback.format_exception_only(type(err), err)).strip()
        full = _unless_disk_full(lambda: _state_row(store, state, status, written, detail)) or full
        if full is not None:  # the rows written are whole parts: the same command continues from them
            raise DiskFull(full.path, f"disk full writing {full.path}: certification {cert_id} keeps {written} of "
                                      f"{len(indices)} images; free space, then run the same `crt-bench certify` "
                                      "command") from err
        if status == RunStatus.INTERRUPTED:
            log.warning(f"certification {cert_id} stopped after {written} of {len(indices)} images; run the same "
                        "`crt-bench certify` command again to continue")
            err.reported = True  # type: ignore[attr-defined]
        raise
    _state_row(store, state, RunStatus.FINISHED, written)
    if not shard:  # the certification is whole: its parts become one (shards: the closing pass does it)
        store.compact_run(run_id, COMPACTED)
    return cert_id, _ordered(store.certification_rows(cert_id), indices)


def _state_row(store: ResultsStore, state: dict, status: RunStatus, done: int, error: str = "") -> None:
    store.append("certifications", [{**state, "status": status.value, "images_done": int(done), "error": error,
                                     "updated": time.time()}])


def _latest_status(store: ResultsStore, cert_id: str, run_id: str) -> str:
    """The latest unsharded state of a certification ('' when none was recorded)."""
    states = store.certification_states(run_id=run_id, transfers=True)
    mine = states[states["cert_id"] == cert_id]
    return "" if mine.empty else str(mine["status"].iloc[-1])


def _unless_disk_full(write: Callable[[], None]) -> DiskFull | None:
    """Run ``write``; a :class:`DiskFull` is returned instead of raised (the caller reports it once)."""
    try:
        write()
    except DiskFull as full:
        return full
    return None


def _ordered(rows: pd.DataFrame, indices: list[int]) -> pd.DataFrame:
    """The rows in subset order (a resumed certification's parts were written out of order)."""
    position = {idx: i for i, idx in enumerate(indices)}
    rows = rows[rows["idx"].isin(position)]
    return rows.iloc[rows["idx"].map(position).argsort(kind="stable")].reset_index(drop=True)

