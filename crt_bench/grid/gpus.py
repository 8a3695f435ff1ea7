"""The GPUs of a local grid: each job gets its own, out of those the grid's process sees.

submitit's local executor exports one ``CUDA_VISIBLE_DEVICES`` to every job it starts: ``""`` unless told
``gpus_per_node`` (then ``0..k-1``, the same GPUs for every job). :class:`GpuPoolExecutor` wraps it and,
job by job, hands out GPUs from a :class:`GpuPool` of the parent's visible GPUs (its ``CUDA_VISIBLE_DEVICES``,
or ``0..torch.cuda.device_count()-1``): a job of ``nproc`` ranks gets ``nproc`` GPUs of its own (its ranks map
to ``cuda:0..nproc-1`` of them, :func:`crt_bench.parallel.env.rank_device`); at most one job per GPU unless
more jobs at once were asked for than there are GPUs; the GPUs come back when the job has ended.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from crt_bench.core.errors import CrtBenchError


def visible_gpus(environ: Mapping[str, str] | None = None, count: int | None = None) -> list[str]:
    """The GPUs this process sees, named as a child's ``CUDA_VISIBLE_DEVICES`` must name them.

    ``count``: how many CUDA devices torch sees (default: ``torch.cuda.device_count()``); CUDA uses only
    that many entries of ``CUDA_VISIBLE_DEVICES`` (it stops at the first invalid one).
    """
    environ = os.environ if environ is None else environ
    if count is None:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    raw = environ.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return [str(i) for i in range(count)]
    return [name.strip() for name in raw.split(",") if name.strip()][:count]


class GpuPool:
    """GPUs handed to jobs, ``per_job`` distinct GPUs each, at most ``jobs_per_gpu`` jobs on one GPU."""

    def __init__(self, gpus: Sequence[str], per_job: int = 1, jobs_per_gpu: int = 1) -> None:
        if not gpus:
            raise CrtBenchError("a GPU pool needs at least one GPU")
        if per_job > len(gpus):
            raise CrtBenchError(f"--nproc {per_job} gives each job {per_job} GPUs, but this machine shows "
                                f"{len(gpus)} (CUDA_VISIBLE_DEVICES={','.join(gpus)}): use --nproc {len(gpus)} or "
                                "fewer, or --device cpu")
        self.gpus, self.per_job, self.jobs_per_gpu = list(gpus), per_job, jobs_per_gpu
        self.users = {gpu: 0 for gpu in self.gpus}

    @property
    def capacity(self) -> int:
        """How many jobs can hold their GPUs at once."""
        return len(self.gpus) * self.jobs_per_gpu // self.per_job

    def take(self, count: int | None = None) -> tuple[str, ...] | None:
        """``count`` (default ``per_job``) distinct GPUs, the least used first; None when too few are free."""
        count = self.per_job if count is None else count
        free = sorted((gpu for gpu in self.gpus if self.users[gpu] < self.jobs_per_gpu), key=self.users.get)
        if len(free) < count:
            return None
        chosen = tuple(sorted(free[:count], key=self.gpus.index))
        for gpu in chosen:
            self.users[gpu] += 1
        return chosen

    def give_back(self, gpus: Sequence[str]) -> None:
        for gpu in gpus:
            self.users[gpu] -= 1


def local_pool(device: str = "auto", nproc: int = 1, visible: Sequence[str] | None = None) -> GpuPool | None:
    """The GPU pool of a local grid on ``device`` (None: CPU jobs, no GPU or ``--device cpu``); raises a
    :class:`CrtBenchError` for what it cannot give (``--nproc`` above the GPUs, one fixed ``cuda:N``)."""
    gpus = [] if device == "cpu" else list(visible_gpus() if visible is None else visible)
    if not gpus:
        return None
    if device not in ("auto", "cuda"):
        raise CrtBenchError(f"--device {device} with the local executor: every job gets GPUs of its own out of the "
                            f"{len(gpus)} this machine shows; pick them with CUDA_VISIBLE_DEVICES=... and --device "
                            "cuda (or auto)")
    return GpuPool(gpus, per_job=nproc)


class GpuPoolExecutor:
    """submitit's local executor, each job started with its own GPUs from ``pool`` as CUDA_VISIBLE_DEVICES."""

    def __init__(self, executor: Any, pool: GpuPool, nproc: int = 1, max_parallel: int | None = None) -> None:
        self.executor, self.pool, self.nproc = executor, pool, nproc
        if max_parallel is not None and max_parallel > pool.capacity:  # asked for: jobs share GPUs
            pool.jobs_per_gpu = math.ceil(max_parallel * pool.per_job / len(pool.gpus))
        self.parallel = max_parallel or pool.capacity
        self._held: dict[int, tuple[str, ...]] = {}

    def has_room(self) -> bool:
        """Enough GPUs are free for one more job."""
        return sum(self.pool.users[gpu] < self.pool.jobs_per_gpu for gpu in self.pool.gpus) >= self.pool.per_job

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A job of ``nproc`` tasks on ``nproc`` GPUs of its own (raises when none are free: see :meth:`has_room`)."""
        return self._submit(self.nproc, fn, args, kwargs)

    def submit_one(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """A job of one process on one GPU (the timing probes: one copy, not ``nproc`` competing ones)."""
        return self._submit(1, fn, args, kwargs)

    def _submit(self, ntasks: int, fn: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        gpus = self.pool.take(ntasks)
        if gpus is None:
            raise RuntimeError("no free GPU: ask has_room() before submitting")
        # submitit's LocalExecutor._submit_command reads these three parameters for the job it starts and
        # exports CUDA_VISIBLE_DEVICES=",".join(visible_gpus[:gpus_per_node]). Set directly: its
        # update_parameters accepts integer indices only, and a parent's list may hold GPU or MIG UUIDs.
        self.executor.parameters.update(tasks_per_node=ntasks, gpus_per_node=len(gpus), visible_gpus=gpus)
        try:
            handle = self.executor.submit(fn, *args, **kwargs)
        except BaseException:
            self.pool.give_back(gpus)
            raise
        self._held[id(handle)] = gpus
        return handle

    def release(self, handle: Any) -> None:
        """``handle``'s job has ended: its GPUs go back to the pool."""
        gpus = self._held.pop(id(handle), None)
        if gpus is not None:
            self.pool.give_back(gpus)

    def gpus_of(self, handle: Any) -> tuple[str, ...]:
        return self._held.get(id(handle), ())


def submit_single(executor: Any, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn`` as a job of one process (and one GPU), whatever ``--nproc`` the executor's grid jobs have."""
    if isinstance(executor, GpuPoolExecutor):
        return executor.submit_one(fn, *args, **kwargs)
    params = getattr(executor, "parameters", None)
    single = {"tasks_per_node": 1} if params is not None and "tasks_per_node" in params else {}
    if params is not None and "ntasks_per_node" in params:  # slurm
        single = {"ntasks_per_node": 1, **({"gpus_per_node": 1} if "gpus_per_node" in params else {})}
    if not single:
        return executor.submit(fn, *args, **kwargs)
    before = {key: params[key] for key in single}
    executor.update_parameters(**single)
    try:
        return executor.submit(fn, *args, **kwargs)
    finally:
        executor.update_parameters(**before)


def release(executor: Any, handle: Any) -> None:
    """A job ended: the GPUs it held go back (a no-op for executors without a GPU pool)."""
    if isinstance(executor, GpuPoolExecutor):
        executor.release(handle)


def has_room(executor: Any) -> bool:
    return executor.has_room() if isinstance(executor, GpuPoolExecutor) else True


def default_parallel(executor: Any) -> int:
    """Jobs at once when none was asked for: one per GPU (or per ``nproc`` GPUs) of a pool, else one."""
    return executor.parallel if isinstance(executor, GpuPoolExecutor) else 1
