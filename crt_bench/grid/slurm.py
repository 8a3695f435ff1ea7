"""What crt-bench asks of a SLURM scheduler beyond submitit: jobs that fit the partition, refusals as one line,
and the end of a job that left the queue without a result (submitit sees it only through sacct, which a
cluster without accounting lacks).

Everything here calls the SLURM client commands (sinfo, squeue); nothing imports submitit at module level.
"""
from __future__ import annotations

import subprocess
from typing import Any

from crt_bench.core.errors import CrtBenchError

CPU_PROFILES = ("cpu", "cpu-full")  # sized for CPUs: their jobs never ask for a GPU
# squeue states of a job that is still the scheduler's (waiting, running, being requeued)
LIVE_STATES = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD",
               "RESIZING", "SUSPENDED", "STOPPED", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "SPECIAL_EXIT",
               "PREEMPTED"}


NEVER_SATISFIED = "DependencyNeverSatisfied"  # squeue's reason for a job whose afterok dependency failed


def _client(args: list[str], what: str, *, empty_when: str | None = None) -> str:
    """A SLURM client command's stdout; one line naming ``what`` and SLURM's own reason when it fails
    (``empty_when``: an error message that means "nothing", e.g. squeue's for job ids it no longer knows)."""
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise CrtBenchError(f"no SLURM scheduler answers ({what}: {err}); `--dry-run` shows the sbatch script that "
                            "would be submitted") from None
    if done.returncode != 0 and empty_when is not None and empty_when in done.stderr:
        return ""
    if done.returncode != 0:
        reason = " ".join(done.stderr.split()) or f"exit status {done.returncode}"
        raise CrtBenchError(f"no SLURM scheduler answers ({what}: {reason}); `--dry-run` shows the sbatch script "
                            "that would be submitted")
    return done.stdout


def partition_has_gpus(partition: str | None) -> bool:
    """Whether ``partition`` (None: the cluster's default one) has nodes with GPU generic resources."""
    rows = [line.split(None, 1) for line in _client(["sinfo", "-h", "-o", "%P %G"], "sinfo").splitlines() if line]
    names = {name.rstrip("*") for name, *_ in rows}
    if partition is not None and partition not in names:
        raise CrtBenchError(f"the SLURM cluster has no partition {partition!r}; its partitions: "
                            f"{', '.join(sorted(names)) or 'none'}")
    wanted = [gres for name, *gres in rows if (name.rstrip("*") == partition if partition else name.endswith("*"))]
    return any("gpu" in g for gres in wanted for g in gres)


def job_gpus(gpus: int | None, *, device: str = "auto", profile: str | None = None, partition: str | None = None,
             nproc: int = 1) -> int:
    """GPUs per job: ``gpus`` when given (0 allowed); none for a CPU run (``--device cpu``, a CPU profile) or a
    partition without GPUs; else one per process of the job (``--nproc``)."""
    if gpus is not None:
        return gpus
    if device == "cpu" or profile in CPU_PROFILES:
        return 0
    return nproc if partition_has_gpus(partition) else 0


class SlurmSubmitter:
    """submitit's SlurmExecutor (every attribute passes through) whose refused submission is one
    :class:`CrtBenchError` line carrying sbatch's reason instead of submitit's FailedJobError traceback."""

    def __init__(self, executor: Any) -> None:
        self._executor = executor

    def __getattr__(self, name: str) -> Any:
        return getattr(self._executor, name)

    def submit(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self._refusals_as_one_line(self._executor.submit, fn, *args, **kwargs)

    def map_array(self, fn: Any, *iterables: Any) -> list[Any]:
        """One SLURM array job, a task per item (``fn(*items)``); refused: one line, nothing submitted."""
        return self._refusals_as_one_line(self._executor.map_array, fn, *iterables)

    @staticmethod
    def _refusals_as_one_line(submit: Any, *args: Any, **kwargs: Any) -> Any:
        from submitit.core.utils import FailedJobError

        try:
            return submit(*args, **kwargs)
        except (FailedJobError, subprocess.CalledProcessError, OSError) as err:
            raise CrtBenchError(f"SLURM refused the job: {sbatch_reason(err)}") from None


def sbatch_reason(err: BaseException) -> str:
    """sbatch's own error lines out of a failed submission (all of it when it names none), on one line."""
    text = str(getattr(err, "stderr", None) or err)
    lines = [" ".join(line.split()) for line in text.splitlines() if line.strip()]
    said = [line for line in lines if "error" in line.lower()]
    return "; ".join(said or lines) or type(err).__name__


def queue_states(ids: list[str]) -> dict[str, tuple[str, str]]:
    """SLURM job id -> (state, reason) for those of ``ids`` the scheduler still knows (it forgets a job
    MinJobAge after it ended). One squeue call; a scheduler that does not answer is one CrtBenchError."""
    if not ids:
        return {}
    listing = _client(["squeue", "-h", "-r", "-t", "all", "-j", ",".join(sorted(set(ids))), "-o", "%i|%T|%r"],
                      "squeue", empty_when="Invalid job id")  # -r: an array job's tasks one by one
    states = {}
    for line in listing.splitlines():
        job_id, _, rest = line.partition("|")
        state, _, reason = rest.partition("|")
        if job_id.strip():
            states[job_id.strip()] = (state.strip(), reason.strip())
    return states


def is_live(state: str, reason: str = "") -> bool:
    """Still the scheduler's and able to run: not ended, not pending on a dependency that can never be met."""
    return state in LIVE_STATES and reason != NEVER_SATISFIED


def scancel(ids: list[str]) -> None:
    """Cancel these SLURM jobs (one scancel call; ids already gone are ignored)."""
    if ids:
        _client(["scancel", *sorted(set(ids))], "scancel", empty_when="Invalid job id")


def ended_without_result(handles: dict[str, Any]) -> dict[str, str]:
    """Keys of the SLURM jobs among ``handles`` that the scheduler has ended without a submitit result (cancelled,
    timed out, node failure, or gone from the queue) or keeps pending forever (a failed ``afterok`` dependency:
    DependencyNeverSatisfied), with the scheduler's state and reason. One squeue call."""
    slurm = {key: h for key, h in handles.items() if type(h).__name__ == "SlurmJob"}
    if not slurm:
        return {}
    try:
        states = queue_states([str(h.job_id) for h in slurm.values()])
    except CrtBenchError:
        return {}  # the controller is busy or restarting: ask again at the next poll
    ended = {}
    for key, handle in slurm.items():
        state, reason = states.get(str(handle.job_id), ("", ""))
        if is_live(state, reason) or state == "COMPLETED" or handle.paths.result_pickle.exists():
            continue  # still the scheduler's (not pending forever on a failed dependency), or its result tells
        what = f"{state} ({reason})" if reason and reason != "None" else state or "gone from the queue"
        ended[key] = f"SLURM job {handle.job_id} ended without a result: {what}"
    return ended
