"""Transfer a finished certification of a teacher to a student run, resumably (``certify --transfer-from``).

The student's rows go to the ``certify`` table like any certification's, with ``procedure = "transfer"``,
``transfer_from`` (the teacher's cert id), ``n_p``, ``alpha_zeta`` and ``disagreements``; ``n0``, ``n`` and
``alpha`` stay the teacher's (its ``pA_lower`` is what they give).  The :class:`TransferKey` names the
certification; images are keyed as in CERTIFY, so the same command continues an interrupted transfer
(:func:`crt_bench.certify.resumable.store_resumably`).  Everything that would make the transferred radii
meaningless is refused with one line before anything is written: an unknown or unfinished teacher
certification (or one that is itself a transfer), another dataset, sigma, subset or noise seed than the
student's certification would use, another number of classes or input shape, ``n_p < 1``, TF32 on for only
one of the two.  The teacher runs at its certification's precision, the student at ``--precision``.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from crt_bench.certify.precision import uses_tf32
from crt_bench.certify.resumable import FLUSH_IMAGES, FLUSH_SECONDS, CertKey, stamped, store_resumably
from crt_bench.certify.transfer import iter_transfer
from crt_bench.config.choices import Precision, check_precision
from crt_bench.config.run import RunConfig
from crt_bench.config.subsets import parse_subset
from crt_bench.core.checks import check_alpha, check_count, check_sigma
from crt_bench.core.constants import TRANSFER_PROCEDURE
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.provenance import environment, pick_device
from crt_bench.core.states import RunStatus
from crt_bench.core.tf32 import check_tf32, in_force_under
from crt_bench.data.datasets import load_split
from crt_bench.models.files import LoadedModel, load_model
from crt_bench.store.locks import ProcessLock
from crt_bench.store.schema import COUNT_COLUMNS, run_id_of
from crt_bench.store.store import ResultsStore

SHAPE_KEYS = ("num_classes", "in_chans", "image_size")
"""Model-file metadata that teacher and student must share (where both record it)."""


def default_n_p(n_teacher: int) -> int:
    """A transfer's disagreement samples per image when none are given: a tenth of the teacher's N."""
    return max(1, n_teacher // 10)


@dataclass(frozen=True)
class TransferConfig:
    """How to transfer: ``n_p`` disagreement samples per image (None: a tenth of the teacher's N) at
    ``alpha_zeta`` (None: the teacher's alpha); the engine settings as
    :class:`~crt_bench.config.certify.CertifyConfig`'s."""

    n_p: int | None = None
    alpha_zeta: float | None = None
    batch: int | None = None
    precision: str = "fp32"
    compile: bool = False
    subset: str = "all"

    def validate(self) -> None:
        if self.n_p is not None:
            check_count("--transfer-n (disagreement samples n_p)", self.n_p)
        if self.alpha_zeta is not None:
            check_alpha(self.alpha_zeta, "--transfer-alpha (alpha_zeta)")
        if self.batch is not None:
            check_count("batch", self.batch)
        check_precision(self.precision)


@dataclass(frozen=True)
class TransferKey(CertKey):
    """What determines a transferred certification's rows: the student's CERTIFY settings, the teacher's
    certification (its own settings come with its cert id) and the disagreement samples' n_p and alpha."""

    transfer_from: str
    n_p: int
    alpha_zeta: float

    ID_TAG: ClassVar[str] = "t"


def teacher_state(store: ResultsStore, cert_id: str) -> dict[str, Any]:
    """The finished CERTIFY certification ``cert_id``'s state row, or CrtBenchError."""
    states = store.certification_states(run_id=run_id_of(cert_id), transfers=True)
    mine = states[states["cert_id"] == cert_id] if "cert_id" in states else states.iloc[0:0]
    if mine.empty:
        raise CrtBenchError(f"--transfer-from: no certification {cert_id!r} in {store.root} (give a cert id that "
                            "crt-bench certify printed)")
    row = mine.iloc[-1].to_dict()
    if str(row["status"]) != RunStatus.FINISHED:
        raise CrtBenchError(f"--transfer-from: certification {cert_id} is {row['status']}, not finished; run its "
                            "crt-bench certify command to the end first")
    if isinstance(row.get("key_transfer_from"), str) and row["key_transfer_from"]:
        raise CrtBenchError(f"--transfer-from: certification {cert_id} is itself transferred; transfer from a "
                            "plain CERTIFY certification")
    return row


def transfer_run(
    source: str,
    store: ResultsStore,
    transfer_from: str,
    tcfg: TransferConfig,
    *,
    sigma: float | None = None,
    seed: int = 0,
    data_dir: str | None = None,
    device: str = "auto",
    progress: bool = True,
    input_layer: str = "normalize",
    flush_images: int = FLUSH_IMAGES,
    flush_seconds: float = FLUSH_SECONDS,
) -> tuple[str, pd.DataFrame]:
    """Certify ``source`` (run id or model file) by transfer from ``transfer_from``; returns (cert_id, rows).

    ``sigma`` (default: the student's), ``tcfg.subset`` and ``seed`` are what the student's own
    certification would use; they must equal the teacher certification's.  ``input_layer`` applies to
    reference checkpoints (student or teacher) as in :func:`~crt_bench.certify.resumable.certify_run`.
    """
    tcfg.validate()
    state = teacher_state(store, transfer_from)
    student = load_model(source, store.root, input_layer)
    teacher_rows = store.certification_rows(transfer_from)
    teacher = load_model(_teacher_source(teacher_rows, str(state["key_run_id"])), store.root, input_layer)
    meta = student.meta
    if sigma is None and meta.get("sigma") is None:
        raise CrtBenchError(f"{source} does not record its noise level; pass --sigma")
    sigma = check_sigma(sigma if sigma is not None else meta["sigma"])
    _check_compatible(student, teacher, transfer_from, sigma=sigma, seed=seed, state=state)
    config_file = student.path.parent / "config.json"
    run_cfg = RunConfig.from_json(config_file.read_text()) if config_file.is_file() else None
    test = load_split(meta["dataset"], "test", data_dir=data_dir or (run_cfg.data_dir if run_cfg else None), seed=seed)
    indices = parse_subset(tcfg.subset, len(test))
    if indices != parse_subset(str(state["key_subset"]), len(test)):
        raise CrtBenchError(f"--transfer-from: {transfer_from} certified subset {state['key_subset']!r}, this "
                            f"certification would use {tcfg.subset!r}; pass --subset {state['key_subset']}")
    precision, teacher_precision = check_precision(tcfg.precision), str(state["key_precision"])
    if teacher_precision == Precision.FASTEST.value and "precision" in teacher_rows and len(teacher_rows):
        teacher_precision = str(teacher_rows["precision"].iloc[0])  # the precision its engine chose and used
    if precision == Precision.FASTEST.value:  # the pair runs together: the student at the teacher's choice
        precision = teacher_precision
    if uses_tf32(precision) != uses_tf32(teacher_precision):
        raise CrtBenchError(f"--transfer-from: {transfer_from} ran at precision {teacher_precision}; TF32 must be on "
                            f"for teacher and student or for neither, not at --precision {precision}")
    dev = pick_device(device)
    check_tf32(uses_tf32(precision), dev, "--precision tf32")
    n_teacher = int(state["key_n"])
    key = TransferKey(run_id=meta.get("run_id") or str(source), transfer_from=transfer_from,
                      n0=int(state["key_n0"]), n=n_teacher, alpha=float(state["key_alpha"]), sigma=sigma,
                      subset=tcfg.subset, precision=precision, seed=int(seed),
                      n_p=tcfg.n_p if tcfg.n_p is not None else default_n_p(n_teacher),
                      alpha_zeta=float(tcfg.alpha_zeta if tcfg.alpha_zeta is not None else state["key_alpha"]))
    cert_id = key.cert_id
    record = {**{f"key_{k}": v for k, v in asdict(key).items()}, "cert_id": cert_id, "run_id": key.run_id,
              "images": len(indices), "shard": "", "tf32": in_force_under(uses_tf32(precision), dev)}

    def rows(todo: list[int]) -> Iterator[pd.DataFrame]:
        env = environment(dev)
        started = datetime.now(timezone.utc).isoformat(timespec="seconds")
        for frame, engine in iter_transfer(teacher.model.to(dev).eval(), student.model.to(dev).eval(), test.x,
                                           test.y, teacher_rows, sigma=sigma, n_p=key.n_p, alpha_zeta=key.alpha_zeta,
                                           batch_size=tcfg.batch, indices=todo, seed=key.seed, progress=progress,
                                           precision=precision, teacher_precision=teacher_precision,
                                           compile=tcfg.compile):
            yield stamped(_with_teacher_counts(frame, teacher_rows), engine, key.run_id, cert_id, env, n0=key.n0,
                          n=key.n, alpha=key.alpha, sigma=key.sigma, subset=key.subset, seed=key.seed,
                          procedure=TRANSFER_PROCEDURE, transfer_from=transfer_from, n_p=key.n_p, alpha_zeta=key.alpha_zeta,
                          source=str(student.path), time=started)

    with ProcessLock(store.certification_lock(key.run_id, cert_id), f"certification {cert_id}"):
        return store_resumably(store, record, indices, rows, progress=progress, flush_images=flush_images,
                               flush_seconds=flush_seconds)


def _with_teacher_counts(frame: pd.DataFrame, teacher_rows: pd.DataFrame) -> pd.DataFrame:
    """The teacher's counts and ``pA_lower`` on each student row (as its ``n0``, ``n``, ``alpha``: they are what the
    transferred radius starts from); none where the teacher's certification was written before they were kept."""
    kept = [c for c in COUNT_COLUMNS if c in teacher_rows]
    if kept and not frame.empty:
        by_idx = teacher_rows.drop_duplicates("idx", keep="last").set_index("idx")
        for column in kept:
            frame[column] = frame["idx"].map(by_idx[column]).to_numpy()
    return frame


def _teacher_source(rows: pd.DataFrame, run_id: str) -> str:
    """The model file the teacher's certification read (its rows' ``source``) while it exists, else its run id."""
    source = str(rows["source"].iloc[0]) if "source" in rows and not rows.empty else ""
    return source if source and Path(source).is_file() else run_id


def _check_compatible(student: LoadedModel, teacher: LoadedModel, transfer_from: str, *, sigma: float, seed: int,
                      state: dict[str, Any]) -> None:
    """Refuse a student whose certification would not be the teacher certification's (one line each)."""
    where = f"--transfer-from: {transfer_from}"
    s_data, t_data = student.meta.get("dataset"), teacher.meta.get("dataset")
    if s_data != t_data:
        raise CrtBenchError(f"{where} certified dataset {t_data!r}, the student is a {s_data!r} model")
    for name in SHAPE_KEYS:
        s_value, t_value = student.meta.get(name), teacher.meta.get(name)
        if s_value is not None and t_value is not None and int(s_value) != int(t_value):
            raise CrtBenchError(f"{where}: the teacher has {name}={t_value}, the student {name}={s_value}")
    if not math.isclose(sigma, float(state["key_sigma"]), rel_tol=1e-12):
        raise CrtBenchError(f"{where} certified at sigma={state['key_sigma']}, this certification would use "
                            f"sigma={sigma}; pass --sigma {state['key_sigma']}")
    if int(seed) != int(state["key_seed"]):
        raise CrtBenchError(f"{where} used noise seed {state['key_seed']}, this certification would use {seed}; "
                            f"pass --seed {state['key_seed']}")
