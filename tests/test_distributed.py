"""Data-parallel training on the CPU (gloo): 2 torchrun ranks train the weights one process trains with
the same global batch and seed; a rank killed with SIGKILL leaves a run that ``--resume`` (with another
world size) finishes to the same weights.

The student is ``tiny_cnn``, which has no batch norm: with per-rank batch norm (the default, as in the
reference code) a BN student's statistics would be those of B/2 images per rank instead of B, so its
weights would legitimately differ from the single process's (``--sync-bn`` fixes that, on CUDA only).
The teacher may have batch norm: it is frozen (eval mode) on every rank.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from conftest import state_dict_of

from crt_bench.data.batches import RankBatches, ResidentBatches
from crt_bench.data.datasets import load_split
from crt_bench.parallel.ddp import no_forward_buffer_sync
from crt_bench.parallel.env import DistEnv
from crt_bench.parallel.torchrun import strip_option, torchrun_command
from crt_bench.store.store import ResultsStore
from crt_bench.train.resolve import resolve_run_config
from crt_bench.train.trainer import resume_run, train_run

REPO = Path(__file__).resolve().parents[1]
ATOL = 1e-5  # float32 gradient all-reduce (sum of 2 rank means / 2) vs one mean: rounding only
ATOL_LONG = 1e-4  # ... which 64 SGD steps (momentum) carry along: measured 1.05e-05 after 6 x 32 steps


def _args(method: str, **kw: object) -> list[str]:
    # float32 (--no-amp): the comparison is of rounding in the all-reduce, not of bf16 autocast's
    args = ["--method", method, "--arch", "tiny_cnn", "--profile", "smoke", "--device", "cpu", "--seed", "0", "--no-amp"]
    for key, value in kw.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def _single(store: ResultsStore, method: str, **kw) -> str:
    """The same run in this process (one rank): the reference weights."""
    cfg = resolve_run_config(method, "tiny_cnn", profile="smoke", device="cpu", seed=0, amp=False, **kw)
    return train_run(cfg, store, progress=False)


def _env(*first: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*first, REPO])), "OMP_NUM_THREADS": "1"}


def _launch(store: ResultsStore, args: list[str], *, site: Path | None = None) -> subprocess.Popen:
    """``torchrun --nproc_per_node 2 ... run ARGS``; ``site``: a folder put first on every process's path."""
    cmd = torchrun_command(2, ["run", *args, "--no-progress", "--results", str(store.root)])
    return subprocess.Popen(["nice", "-n", "19", *cmd], env=_env(*([site] if site else [])), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_rank_batches_union_is_the_single_process_batch() -> None:
    split = load_split("synthetic", "train", limit=40)
    def batches(rank: int, world: int) -> list[torch.Tensor]:
        gen = torch.Generator().manual_seed(3)
        sampler = ResidentBatches(split, 12, augment=True, generator=gen)
        return [y for _, y in (RankBatches(sampler, DistEnv(rank, world)) if world > 1 else sampler)]
    one, r0, r1 = batches(0, 1), batches(0, 2), batches(1, 2)
    assert [len(b) for b in r0] == [6, 6, 6, 2] and [len(b) for b in r1] == [6, 6, 6, 2]
    for whole, a, b in zip(one, r0, r1):
        assert torch.equal(torch.cat([a, b]), whole)
    assert strip_option(["run", "--nproc", "2", "--epochs", "1", "--nproc=3"], "--nproc") == ["run", "--epochs", "1"]


def test_two_ranks_train_the_single_process_weights(tmp_path: Path) -> None:
    """Gaussian, then CRT with that teacher: torchrun --nproc_per_node 2 == one process."""
    store = ResultsStore(tmp_path / "results")
    small = dict(epochs=2, train_limit=64, batch_size=16)
    reference = _single(store, "gaussian", **small)
    proc = _launch(store, _args("gaussian", **small))
    out, errs = proc.communicate(timeout=240)
    assert proc.returncode == 0, errs[-3000:]
    run_id = out.strip().splitlines()[-1]
    assert out.strip().splitlines().count(run_id) == 1  # rank 0 alone prints the id
    diff = _max_diff(state_dict_of(store.run_dir(run_id) / "model.pt"),
                     state_dict_of(store.run_dir(reference) / "model.pt"))
    print(f"gaussian: max |w_ddp - w_single| = {diff:.2e}")
    assert diff < ATOL
    row = store.get_run(run_id)
    assert row["world_size"] == 2 and row["train_device_seconds"] == pytest.approx(2 * row["train_seconds"])
    assert (store.runs()["run_id"] == run_id).sum() == 1 and (store.read("epochs")["run_id"] == run_id).sum() == 2

    # CRT with that teacher (the single-process Gaussian run), 2 ranks vs 1
    crt_ref = _single(store, "crt", teacher=reference, **small)
    proc = _launch(store, _args("crt", teacher=reference, **small))
    out, errs = proc.communicate(timeout=240)
    assert proc.returncode == 0, errs[-3000:]
    crt_id = out.strip().splitlines()[-1]
    diff = _max_diff(state_dict_of(store.run_dir(crt_id) / "model.pt"),
                     state_dict_of(store.run_dir(crt_ref) / "model.pt"))
    print(f"crt: max |w_ddp - w_single| = {diff:.2e}")
    assert diff < ATOL


# torch < 2.13's DistributedDataParallel: no forward_sync_buffers (a TypeError), broadcast_buffers instead.
OLD_DDP = '''
import sys
import warnings

import torch.nn.parallel

_Real = torch.nn.parallel.DistributedDataParallel


class OldSignatureDDP(_Real):
    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True,
                 process_group=None, bucket_cap_mb=None, find_unused_parameters=False, check_reduction=False,
                 gradient_as_bucket_view=False, static_graph=False):
        print(f"old-signature DDP: broadcast_buffers={broadcast_buffers}", file=sys.stderr, flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # this torch deprecates broadcast_buffers
            super().__init__(module, device_ids=device_ids, output_device=output_device, dim=dim,
                             broadcast_buffers=broadcast_buffers, process_group=process_group,
                             bucket_cap_mb=bucket_cap_mb, find_unused_parameters=find_unused_parameters,
                             check_reduction=check_reduction, gradient_as_bucket_view=gradient_as_bucket_view,
                             static_graph=static_graph)


torch.nn.parallel.DistributedDataParallel = OldSignatureDDP
'''


def test_the_buffer_sync_keyword_follows_the_installed_signature() -> None:
    class Old:
        def __init__(self, module, device_ids=None, broadcast_buffers=True):
            pass

    class New:
        def __init__(self, module, device_ids=None, broadcast_buffers=None, forward_sync_buffers=None):
            pass

    assert no_forward_buffer_sync(Old) == {"broadcast_buffers": False}
    assert no_forward_buffer_sync(New) == {"forward_sync_buffers": False}


def test_two_ranks_train_with_a_ddp_that_rejects_forward_sync_buffers(tmp_path: Path) -> None:
    """torch 2.6 .. 2.12: DDP has no forward_sync_buffers; the 2-rank run uses broadcast_buffers=False and
    still trains the single-process weights."""
    site = tmp_path / "old_torch"
    site.mkdir()
    (site / "sitecustomize.py").write_text(OLD_DDP)
    store = ResultsStore(tmp_path / "results")
    small = dict(epochs=1, train_limit=64, batch_size=16)
    reference = _single(store, "gaussian", **small)
    proc = _launch(store, _args("gaussian", **small), site=site)
    out, errs = proc.communicate(timeout=240)
    assert proc.returncode == 0, errs[-3000:]
    assert errs.count("old-signature DDP: broadcast_buffers=False") == 2  # both ranks built the old DDP
    run_id = out.strip().splitlines()[-1]
    assert store.get_run(run_id)["world_size"] == 2
    diff = _max_diff(state_dict_of(store.run_dir(run_id) / "model.pt"),
                     state_dict_of(store.run_dir(reference) / "model.pt"))
    assert diff < ATOL


def _rank_pid(torchrun_pid: int, rank: int, timeout: float = 120) -> int:
    """The pid of torchrun's worker with RANK=rank (read from /proc)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for status in Path("/proc").glob("[0-9]*/environ"):
            try:
                environ = status.read_bytes().split(b"\0")
                if f"RANK={rank}".encode() in environ and any(v.startswith(b"TORCHELASTIC_RUN_ID=") for v in environ):
                    pid = int(status.parent.name)
                    if _descends_from(pid, torchrun_pid):
                        return pid
            except (OSError, ValueError):
                continue
        time.sleep(0.2)
    raise AssertionError(f"no rank {rank} under torchrun {torchrun_pid}")


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid > 1:
        if pid == ancestor:
            return True
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return False


def test_kill_9_of_a_rank_then_resume_finishes_the_run(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "results")
    run = dict(epochs=4, train_limit=1024, batch_size=64)  # 16 steps per epoch: long enough to kill mid-run
    reference = _single(store, "gaussian", **run)
    proc = _launch(store, _args("gaussian", **run))
    victim = _rank_pid(proc.pid, 1)
    runs_dir = store.root / "runs"

    def checkpointed() -> list[Path]:  # the 2-rank run's first checkpoint (the reference has its own)
        return [p for p in runs_dir.glob("*/checkpoint.pt") if p.parent.name != reference]

    deadline = time.monotonic() + 240
    while not checkpointed():
        assert time.monotonic() < deadline and proc.poll() is None, "the 2-rank run never checkpointed"
        time.sleep(0.02)
    os.kill(victim, signal.SIGKILL)
    proc.communicate(timeout=240)
    assert proc.returncode != 0  # torchrun reports the lost rank and stops the other
    run_id = checkpointed()[0].parent.name
    assert not (store.run_dir(run_id) / "model.pt").exists()
    assert store.get_run(run_id)["status"] in {"running", "interrupted", "failed"}
    # resume in one process (this one): the checkpoint does not depend on the world size
    assert resume_run(run_id, store, progress=False) == run_id
    row = store.get_run(run_id)
    assert row["status"] == "finished" and row["epochs_done"] == 4
    epochs = store.read("epochs")
    assert sorted(epochs[epochs["run_id"] == run_id]["epoch"]) == list(range(1, 5))
    diff = _max_diff(state_dict_of(store.run_dir(run_id) / "model.pt"),
                     state_dict_of(store.run_dir(reference) / "model.pt"))
    print(f"killed + resumed: max |w - w_single| = {diff:.2e}")
    assert diff < ATOL_LONG
