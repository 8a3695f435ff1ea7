"""The rows a training run writes about itself, and what a resume repairs of them (crt_bench.train.trainer).

:class:`RunRecords` is the bookkeeping half of :class:`crt_bench.train.trainer.Trainer`: the run's row in
each status, the epoch row a kill left only in the checkpoint, the "finished" row a kill left unwritten.
Every rank computes the same rows; rank 0 writes them.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from crt_bench.config.run import RunConfig
from crt_bench.core.errors import CrtBenchError, DiskFull
from crt_bench.core.states import RunStatus
from crt_bench.models.files import CHECKPOINT_FILE, MODEL_FILE, LoadedModel, read_torch_file
from crt_bench.parallel.env import DistEnv
from crt_bench.store.store import ResultsStore
from crt_bench.train.checkpoint import RunState


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class RunRecords:
    """The rows of run ``run_id`` (its folder ``run_dir``) in ``store``; the trainer sets these attributes."""

    cfg: RunConfig
    store: ResultsStore
    run_id: str
    run_dir: Path
    dist: DistEnv
    env: dict[str, Any]
    engine: dict[str, Any]  # the engine settings as resolved (crt_bench.train.step)
    init_run_id: str  # the run whose weights the trained module starts from (MethodSpec.compose)
    kept_epoch: int  # the epoch of the checkpoint on disk (what a resume continues from)

    def _teacher_seconds(self, teacher: LoadedModel | None) -> float:
        """The teacher run's training seconds, when it is a run of this store (NaN otherwise)."""
        return self._run_seconds(teacher.meta.get("run_id", "") if teacher else "")

    def _run_seconds(self, run_id: str) -> float:
        """A run's training seconds, when it is a run of this store (NaN otherwise)."""
        if not run_id:
            return float("nan")
        try:
            return float(self.store.get_run(run_id)["train_seconds"])
        except CrtBenchError:
            return float("nan")

    def _run_row(self, status: RunStatus, state: RunState, teacher: LoadedModel | None, error: str = "") -> dict[str, Any]:
        cfg = self.cfg
        teacher_seconds = self._teacher_seconds(teacher)
        # The cost of obtaining this model: its own training, plus the teacher's when the teacher was
        # trained only for it (the proxy-teacher workflow of the paper's Table 1).
        total = state.train_seconds + (teacher_seconds if cfg.teacher_dedicated and teacher_seconds == teacher_seconds
                                       else 0.0)
        return {
            "run_id": self.run_id, "job_key": cfg.job_key, "method": cfg.method, "arch": cfg.arch,
            "dataset": cfg.dataset,
            "sigma": cfg.sigma, "teacher": cfg.teacher or "",
            "teacher_arch": teacher.meta.get("arch", "") if teacher else "",
            "teacher_run_id": teacher.meta.get("run_id", "") if teacher else "",
            "epochs": cfg.epochs, "epochs_done": state.epoch, "batch_size": cfg.batch_size, "seed": cfg.seed,
            "profile": cfg.profile, "device": self.env["device"], "torch_version": self.env["torch"],
            "git_commit": self.env["git_commit"], "config": cfg.to_json(), "env": json.dumps(self.env),
            "train_seconds": state.train_seconds, "teacher_train_seconds": teacher_seconds,
            "world_size": self.dist.world_size, "train_device_seconds": state.device_seconds or state.train_seconds,
            "teacher_dedicated": cfg.teacher_dedicated, "total_train_seconds": total,
            "init_run_id": self.init_run_id, "init_train_seconds": self._run_seconds(self.init_run_id),
            **self.engine,
            "status": status.value, "error": error,
            "start_time": state.started, "end_time": now() if status != RunStatus.RUNNING else "",
            "updated": time.time(),
        }

    def _write_missing_epoch_row(self, checkpoint: dict[str, Any]) -> None:
        """The row of the checkpoint's epoch, when a kill came between the checkpoint and the row."""
        if "epoch_row" not in checkpoint or not self.dist.is_main:
            return
        if not self.store.read("epochs", where={"run_id": self.run_id, "epoch": int(checkpoint["epoch"])}).empty:
            return
        self._append("epochs", [json.loads(checkpoint["epoch_row"])])

    def _latest_row(self) -> dict[str, Any] | None:
        latest = self.store.runs(where={"run_id": self.run_id})
        return None if latest.empty else latest.iloc[0].to_dict()

    def _finished(self) -> bool:
        row = self._latest_row()
        return (self.run_dir / MODEL_FILE).is_file() and (row is None or row["status"] == RunStatus.FINISHED)

    def _complete_finished(self) -> bool:
        """``model.pt`` exists: append the "finished" row if a kill came before it; False if it was there."""
        row = self._latest_row()
        if row is None or row["status"] == RunStatus.FINISHED or not self.dist.is_main:
            return False
        if (self.run_dir / CHECKPOINT_FILE).is_file():
            ckpt = read_torch_file(self.run_dir / CHECKPOINT_FILE)
            self._write_missing_epoch_row(ckpt)
            extra = row["total_train_seconds"] - row["train_seconds"]
            row.update(epochs_done=int(ckpt["epoch"]), train_seconds=float(ckpt["train_seconds"]),
                       total_train_seconds=float(ckpt["train_seconds"]) + extra)
        row.update(status=RunStatus.FINISHED.value, error="", end_time=now(), updated=time.time())
        self._append("runs", [row])
        return True

    def _append(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Rows are rank 0's to write (every rank computes the same ones)."""
        if self.dist.is_main:
            self.store.append(table, rows)

    def _disk_full(self, full: DiskFull) -> DiskFull:
        kept = (f"keeps epochs 1..{self.kept_epoch} (checkpoint of epoch {self.kept_epoch})" if self.kept_epoch
                else "has no checkpoint yet")
        return DiskFull(full.path, f"disk full writing {full.path}: run {self.run_id} {kept}; free space, then "
                                   f"`crt-bench run --resume {self.run_id}`")
