"""Running one job: train, resume or skip, then certify."""
from __future__ import annotations

import os

from crt_bench.certify.agreement import check_agreement
from crt_bench.certify.resumable import certify_run
from crt_bench.certify.transfer_run import TransferConfig, transfer_run
from crt_bench.core.errors import CrtBenchError
from crt_bench.core.provenance import device_model, pick_device
from crt_bench.core.states import RunStatus
from crt_bench.grid.jobs import Job
from crt_bench.models.files import CHECKPOINT_FILE
from crt_bench.parallel.env import DistEnv, broadcast_object, env_from, rank_device
from crt_bench.store.store import ResultsStore
from crt_bench.train.resolve import resolve_run_config
from crt_bench.train.trainer import resume_run, train_run


def execute_job(job: Job, results: str) -> str:
    """Run one job to completion (train, or resume, or skip; then certify); returns its run id."""
    ranks = env_from()  # a multi-task job (--nproc): rank 0 decides, every rank trains, rank 0 certifies
    check_job_device(job, ranks)
    store = ResultsStore(results)
    if job.trained is not None:  # a certification job (split_certification): its training finished before
        run_id = store.finished_run(job.trained.key)
        if run_id is None:
            raise CrtBenchError(f"{job.label}: the training job {job.trained.key} has no finished run")
        if ranks.is_main:
            certify_job(job, store, run_id)
        return run_id
    decision: tuple[str, str | None] | None = None
    if ranks.is_main:
        try:
            decision = _decide(job, store, CHECKPOINT_FILE)
        except CrtBenchError as err:  # every rank must hear it, or the others wait for the broadcast forever
            decision = ("error", str(err))
    action, run_id = broadcast_object(decision, ranks)
    if action == "error":
        raise CrtBenchError(str(run_id))
    if action == "resume":
        run_id = resume_run(run_id, store, progress=False)
    elif action == "new":
        cfg = resolve_run_config(job.method, job.arch, profile=job.profile, dataset=job.dataset, sigma=job.sigma,
                                 epochs=job.epochs, seed=job.seed, teacher=run_id, train_limit=job.train_limit,
                                 teacher_dedicated=job.teacher_dedicated, data_dir=job.data_dir, job_key=job.key,
                                 device=job.device, hparams=_hparams(job, store) or None)
        run_id = train_run(cfg, store, progress=False)
    if ranks.is_main and job.certify:
        certify_job(job, store, run_id)
    return run_id


def check_job_device(job: Job, ranks: DistEnv | None = None) -> None:
    """A job whose device is not the one the grid's preflight announced refuses to start (before any row)."""
    if job.expect_device is None:
        return
    actual = device_model(rank_device(job.device, env_from() if ranks is None else ranks))
    if actual != job.expect_device:
        cuda = os.environ.get("CUDA_VISIBLE_DEVICES")
        raise CrtBenchError(f"job {job.label} refuses to start: it would run on {actual} (CUDA_VISIBLE_DEVICES="
                            f"{'unset' if cuda is None else repr(cuda)}), but the grid's preflight announced "
                            f"{job.expect_device}; nothing was written")


def certify_job(job: Job, store: ResultsStore, run_id: str) -> None:
    """Certify ``run_id`` as ``job`` says (resumable), check a sample against fp32, transfer from the teacher."""
    ccfg = job.certify_config(pick_device(job.device).type)
    if not run_certified(store, run_id):
        # Resumable: a certification cut short (kill, requeue) continues with the images it lacks.
        certify_run(run_id, store, ccfg, data_dir=job.data_dir, seed=job.seed, device=job.device, progress=False)
    # bf16 / compiled: a sample again in fp32 (a no-op when recorded, or when the certification is fp32)
    check_agreement(run_id, store, ccfg, seed=job.seed, data_dir=job.data_dir, device=job.device)
    if job.transfer and job.teacher is not None:
        transfer_from_teacher(job, store, run_id)


def transfer_from_teacher(job: Job, store: ResultsStore, run_id: str) -> str:
    """Certify ``run_id`` by transfer from its teacher job's finished CERTIFY on the profile's images
    (:mod:`crt_bench.certify.transfer_run`, resumable: a no-op when done); returns the transfer's cert id.

    The transfer uses the teacher certification's noise seed (a student of another training seed is
    compared with its teacher under the teacher's noise) and the profile's precision for the student.
    """
    ccfg = job.certify_config(pick_device(job.device).type)
    teacher_run = store.finished_run(job.teacher.key)
    states = store.certification_states(run_id=teacher_run) if teacher_run else None
    if states is None or states.empty or "key_subset" not in states:
        raise CrtBenchError(f"transfer for {job.label}: the teacher job {job.teacher.key} has no certification")
    done = states[(states["status"] == RunStatus.FINISHED) & (states["key_subset"] == ccfg.subset)
                  & (states["key_n"] == ccfg.n)]
    if done.empty:
        raise CrtBenchError(f"transfer for {job.label}: the teacher job {job.teacher.key} has no finished "
                            f"certification of subset {ccfg.subset} at N={ccfg.n}")
    source = done.iloc[-1]
    tcfg = TransferConfig(subset=ccfg.subset, precision=ccfg.precision, compile=ccfg.compile, batch=ccfg.batch)
    cert_id, _ = transfer_run(run_id, store, str(source["cert_id"]), tcfg, seed=int(source["key_seed"]),
                              data_dir=job.data_dir, device=job.device, progress=False)
    return cert_id


def _decide(job: Job, store: ResultsStore, checkpoint_file: str) -> tuple[str, str | None]:
    """("done", run id), ("resume", run id) or ("new", teacher run id or reference) for ``job``.

    Any unfinished run of the job with a checkpoint is resumed: interrupted, failed, or "running" with
    its process gone (the store shows it as interrupted).
    """
    run_id = store.finished_run(job.key)
    if run_id is not None:
        return "done", run_id
    unfinished = store.runs(where={"job_key": job.key})
    resumable = [r for r in unfinished.get("run_id", []) if (store.run_dir(r) / checkpoint_file).is_file()]
    if resumable:
        return "resume", resumable[-1]
    teacher = job.teacher_ref
    if job.teacher is not None:
        teacher = store.finished_run(job.teacher.key)
        if teacher is None:
            raise CrtBenchError(f"teacher job {job.teacher.key} has no finished run")
    return "new", teacher


def _hparams(job: Job, store: ResultsStore) -> dict[str, str]:
    """The job's ``--set`` pairs, with ``denoiser`` the finished run of its denoiser job."""
    hparams = dict(job.hparams)
    if job.denoiser is not None:
        run_id = store.finished_run(job.denoiser.key)
        if run_id is None:
            raise CrtBenchError(f"denoiser job {job.denoiser.key} has no finished run")
        hparams["denoiser"] = run_id
    return hparams


def run_certified(store: ResultsStore, run_id: str) -> bool:
    """A certification of this run has finished (some rows alone may be a certification cut short)."""
    return bool(store.certification_states(run_id=run_id)["status"].eq(RunStatus.FINISHED).any())
