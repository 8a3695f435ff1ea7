"""The training loop: one method-agnostic loop (SGD, or the recipe's Adam), timed per epoch, checkpointed every epoch.

    for epoch:                          lr from the step schedule
        for (x, y) in on-device batches:    (augmented on the device for CIFAR)
            TrainStep: for each of the method's minibatches (crt_bench.train.step)
                loss = method.loss(model, x, y, ctx); backward; SGD step
        synchronize -> epoch wall time, samples/s -> epochs table
        noisy test accuracy (not timed)
        checkpoint.pt, written atomically, holding the epoch's row (resume continues from here)
        the epoch's row -> epochs table

Exactly-once rows: one process drives a run at a time (``RUN_DIR/run.lock``, crt_bench.store.locks), and
the checkpoint is written before the epoch row and carries it, so a kill between the two is repaired
by the resume (which writes the row the checkpoint holds when the table lacks it) instead of leaving a
duplicate (row before checkpoint: the epoch would be trained and written again) or a missing row.
Likewise a kill between ``model.pt`` and the "finished" row is completed by ``--resume``.

What is trained is a fresh classifier of the run's arch, or what the method's ``compose`` builds around
its frozen teacher (denoised smoothing: a denoiser in front of the classifier), of which only the
parameters that require gradients are optimized (crt_bench.train.step.trained_model).

Loss sums are accumulated on the device and read once per epoch, so the step has no host sync.
On CUDA and on CPUs with native bf16 (crt_bench.core.bf16) the forward runs under bf16 autocast
(``--no-amp``: float32); noise is always sampled in float32. The engine's
settings (channels-last, torch.compile, the CRT teacher's folding and precision) are resolved by
crt_bench.train.step and recorded in the run's row; ``trace_steps`` adds a torch.profiler trace.
"""
from __future__ import annotations

import json
import logging
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import torch
from rich.progress import Progress, TextColumn
from torch import nn

from crt_bench.config.run import RunConfig
from crt_bench.config.schedule import lr_at_epoch
from crt_bench.core.atomic import atomic_torch_save, atomic_write_bytes
from crt_bench.core.bits import pack_bits
from crt_bench.core.console import progress
from crt_bench.core.errors import CrtBenchError, DiskFull
from crt_bench.core.provenance import environment, synchronize
from crt_bench.core.states import RunStatus
from crt_bench.core.tf32 import check_tf32, tf32_mode
from crt_bench.data.batches import RankBatches, ResidentBatches, epoch_batches
from crt_bench.data.catalog import dataset_info
from crt_bench.data.datasets import load_split
from crt_bench.data.imagenet import FolderBatches, is_folder_dataset
from crt_bench.data.split import Split
from crt_bench.methods.registry import MethodSpec, StepContext, get_method
from crt_bench.models.files import CHECKPOINT_FILE, MODEL_FILE, LoadedModel, model_metadata, read_torch_file
from crt_bench.parallel.ddp import wrap_model
from crt_bench.parallel.env import all_reduce_mean, broadcast_object, setup
from crt_bench.store.locks import ProcessLock, run_lock
from crt_bench.store.store import ResultsStore
from crt_bench.train.evaluate import noisy_correct
from crt_bench.train.step import TrainStep, make_optimizer, trained_model, warmup_batches
from crt_bench.train.teacher import FrozenTeacher, load_teacher
from crt_bench.train.trace import StepTracer

log = logging.getLogger(__name__)


def new_run_id(cfg: RunConfig) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.method}-{cfg.arch}-{cfg.dataset}-s{cfg.sigma:g}-{stamp}-{uuid.uuid4().hex[:6]}"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class _State:
    epoch: int = 0
    train_seconds: float = 0.0  # wall-clock
    started: str = ""
    device_seconds: float = 0.0  # wall-clock x processes (GPU-seconds on GPUs), summed over resumes of any size


class Trainer:
    """Runs one configured training run against a results store."""

    def __init__(self, cfg: RunConfig, store: ResultsStore, run_id: str | None = None, progress: bool = True):
        # Under torchrun (crt_bench.parallel.env): this rank's device; rank 0 names the run and writes.
        self.dist, self.device = setup(cfg.device)
        check_tf32(cfg.tf32, self.device, "--tf32")  # before anything is written
        self.cfg, self.store, self.progress = cfg, store, progress and self.dist.is_main
        self.run_id = run_id or broadcast_object(new_run_id(cfg), self.dist)
        self.spec: MethodSpec = get_method(cfg.method)
        self.hparams = self.spec.make_hparams(cfg.hparams)
        self.info = dataset_info(cfg.dataset)
        self.run_dir = store.run_dir(self.run_id)
        self.env = environment(self.device)
        self.engine: dict[str, Any] = {}  # the engine settings as resolved (crt_bench.train.step); set by run()
        self.kept_epoch = 0  # the epoch of the checkpoint on disk (what a resume continues from)
        self.init_run_id = ""  # the run whose weights the trained module starts from (MethodSpec.compose)

    # -- bookkeeping ------------------------------------------------------------------------------
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

    def _run_row(self, status: RunStatus, state: _State, teacher: LoadedModel | None, error: str = "") -> dict[str, Any]:
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
            "start_time": state.started, "end_time": _now() if status != RunStatus.RUNNING else "",
            "updated": time.time(),
        }

    def _checkpoint(self, model: nn.Module, optimizer: torch.optim.Optimizer, sampler_gen: torch.Generator,
                    state: _State, epoch_row: dict[str, Any]) -> None:
        if not self.dist.is_main:
            return
        obj = model_metadata(self.cfg.arch, self.info, sigma=self.cfg.sigma, method=self.cfg.method,
                             run_id=self.run_id, model=model)
        obj.update(state_dict=model.state_dict(), optimizer=optimizer.state_dict(), epoch=state.epoch,
                   train_seconds=state.train_seconds, started=state.started, epoch_row=json.dumps(epoch_row),
                   device_seconds=state.device_seconds,
                   rng={"torch": torch.get_rng_state(), "sampler": sampler_gen.get_state(),
                        **({"cuda": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {})})
        atomic_torch_save(obj, self.run_dir / CHECKPOINT_FILE)
        self.kept_epoch = state.epoch

    def _resume(self, model: nn.Module, optimizer: torch.optim.Optimizer, sampler_gen: torch.Generator) -> _State:
        obj = read_torch_file(self.run_dir / CHECKPOINT_FILE)
        model.load_state_dict(obj["state_dict"])
        optimizer.load_state_dict(obj["optimizer"])
        torch.set_rng_state(obj["rng"]["torch"])
        try:
            sampler_gen.set_state(obj["rng"]["sampler"])
        except RuntimeError:  # a CPU generator's state, from before batches were drawn on the device
            raise CrtBenchError(f"run {self.run_id}: its checkpoint holds a batch-sampler state of another device "
                                f"than {sampler_gen.device} (written by an earlier crt-bench, which drew batches on "
                                "the CPU): resume it with that version, or start the run again") from None
        if "cuda" in obj["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(obj["rng"]["cuda"], self.device)
        self._write_missing_epoch_row(obj)
        self.kept_epoch = int(obj["epoch"])
        return _State(epoch=int(obj["epoch"]), train_seconds=float(obj["train_seconds"]), started=obj["started"],
                      device_seconds=float(obj.get("device_seconds", obj["train_seconds"])))

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
        row.update(status=RunStatus.FINISHED.value, error="", end_time=_now(), updated=time.time())
        self._append("runs", [row])
        return True

    def _append(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Rows are rank 0's to write (every rank computes the same ones)."""
        if self.dist.is_main:
            self.store.append(table, rows)

    # -- the loop ---------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> str:
        """Train (or continue) the run while holding its lock; see :meth:`_run`."""
        lock = run_lock(self.run_dir, self.run_id) if self.dist.is_main else _NoLock()
        try:
            if resume:
                if self._finished():  # checked again under the lock; refusing here writes nothing
                    raise CrtBenchError(f"run {self.run_id!r} already finished; nothing to resume")
                lock.acquire()
                if (self.run_dir / MODEL_FILE).is_file():
                    if self._complete_finished():
                        return self.run_id
                    raise CrtBenchError(f"run {self.run_id!r} already finished; nothing to resume")
            return self._run(resume, lock)
        finally:
            lock.release()

    def _run(self, resume: bool, lock: ProcessLock) -> str:
        cfg, device = self.cfg, self.device
        torch.manual_seed(cfg.seed)
        train = load_split(cfg.dataset, "train", data_dir=cfg.data_dir, limit=cfg.train_limit, seed=cfg.seed).to(device)
        test = load_split(cfg.dataset, "test", data_dir=cfg.data_dir, limit=cfg.test_limit, seed=cfg.seed).to(device)
        teacher = (load_teacher(cfg.teacher, str(self.store.root), self.info, device, cfg.sigma,
                                cfg.teacher_input_layer, same_sigma=not self.spec.compose_ref)
                   if self.spec.needs_teacher else None)
        shape = (self.info.in_chans, self.info.image_size, self.info.image_size)
        options = cfg.engine_options()
        frozen = (FrozenTeacher(teacher.model, shape, device, precision=options.teacher_precision,
                                channels_last=options.channels_last, fold=options.fold_teacher)
                  if teacher is not None else None)
        model, self.init_run_id = trained_model(self.spec, cfg, self.info, self.hparams,
                                                teacher.model if teacher else None, str(self.store.root))
        model = model.to(device)
        if teacher is not None:
            with torch.no_grad():
                out = teacher.model(train.x[:2])
            if out.shape != (min(2, len(train)), self.info.num_classes):
                raise CrtBenchError(f"teacher output shape {tuple(out.shape)} does not match the student's "
                                    f"{self.info.num_classes} classes")
        optimizer = make_optimizer(cfg, model)
        if is_folder_dataset(cfg.dataset):  # ImageNet: DataLoader workers, pinned memory (crt_bench.data.imagenet)
            sampler_gen = torch.Generator(device="cpu").manual_seed(cfg.seed)  # DataLoader's generators are CPU ones
            sampler = FolderBatches(train, cfg.batch_size, generator=sampler_gen, device=device,
                                    rank=self.dist.rank, world_size=self.dist.world_size)
        else:  # drawn on the data's device: no host copy per batch
            sampler, sampler_gen = epoch_batches(train, cfg.batch_size, augment=self.info.augment, seed=cfg.seed)
            if self.dist.enabled:  # this rank's block of every global batch (the same batches as one process)
                sampler = RankBatches(sampler, self.dist)
        if resume and (self.run_dir / CHECKPOINT_FILE).is_file():
            state = self._resume(model, optimizer, sampler_gen)
        elif resume:  # stopped before its first checkpoint: start over (same seeds, same weights)
            state = _State(started=_now())
        elif self.dist.is_main:  # a new run: its folder appears only once its inputs were accepted
            self.run_dir.mkdir(parents=True, exist_ok=False)
            lock.acquire()
            atomic_write_bytes(self.run_dir / "config.json", cfg.to_json().encode())
            state = _State(started=_now())
        else:
            state = _State(started=_now())
        ctx = StepContext(sigma=cfg.sigma, hparams=self.hparams, epochs=cfg.epochs, teacher=frozen)
        step = TrainStep(self.spec, model, optimizer, ctx, device, options,
                         wrap=lambda net: wrap_model(net, device, self.dist, cfg.sync_bn))
        self.engine = {"precision": step.precision, "channels_last": step.channels_last, "compile": cfg.compile,
                       "teacher_precision": frozen.precision if frozen else "",
                       "teacher_folded_batchnorms": frozen.folded if frozen else 0, "sync_bn": cfg.sync_bn,
                       "tf32": step.tf32, "warmup_seconds": 0.0}
        self._append("runs", [self._run_row(RunStatus.RUNNING, state, teacher)])
        try:
            if cfg.compile and not is_folder_dataset(cfg.dataset):  # compile in undone, untimed steps, not epoch 1
                self.engine["warmup_seconds"] = step.warm_up(warmup_batches(
                    train.x, train.y, cfg.batch_size, self.dist.world_size, self.dist.rank))
            with tf32_mode(cfg.tf32):  # the step sets it too; this covers the per-epoch noisy test accuracy
                self._loop(step, sampler, sampler_gen, test, state)
            if self.dist.is_main:
                final = model_metadata(cfg.arch, self.info, sigma=cfg.sigma, method=cfg.method, run_id=self.run_id,
                                       model=model)
                final["state_dict"] = model.state_dict()
                atomic_torch_save(final, self.run_dir / MODEL_FILE)
                self._append("runs", [self._run_row(RunStatus.FINISHED, state, teacher)])
        except BaseException as err:
            # SystemExit: submitit's requeue on a time limit or preemption exits the job mid-epoch.
            stop = (KeyboardInterrupt, SystemExit, DiskFull)
            status = RunStatus.INTERRUPTED if isinstance(err, stop) else RunStatus.FAILED
            detail = "".join(traceback.format_exception_only(type(err), err)).strip()
            full = err if isinstance(err, DiskFull) else None
            try:
                self._append("runs", [self._run_row(status, state, teacher, error=detail)])
            except DiskFull as again:  # the "running" row, its lock gone, then reads "interrupted"
                full = full or again
            if full is not None:
                raise self._disk_full(full) from err
            if status == RunStatus.INTERRUPTED and self.dist.is_main:  # the run id is printed only on success: name it here
                log.warning(f"run {self.run_id} stopped after epoch {state.epoch}/{cfg.epochs}; "
                            f"continue it with `crt-bench run --resume {self.run_id}`")
                err.reported = True  # type: ignore[attr-defined]  (the CLI need not say it again)
            raise
        if self.dist.is_main:  # the run is whole: its parts become one (never fatal)
            self.store.compact_run(self.run_id, ("runs", "epochs"))
        return self.run_id

    def _disk_full(self, full: DiskFull) -> DiskFull:
        kept = (f"keeps epochs 1..{self.kept_epoch} (checkpoint of epoch {self.kept_epoch})" if self.kept_epoch
                else "has no checkpoint yet")
        return DiskFull(full.path, f"disk full writing {full.path}: run {self.run_id} {kept}; free space, then "
                                   f"`crt-bench run --resume {self.run_id}`")

    def _loop(self, step: TrainStep, sampler: ResidentBatches, sampler_gen: torch.Generator, test: Split,
              state: _State) -> None:
        cfg, device = self.cfg, self.device
        model, optimizer, ctx = step.model, step.optimizer, step.ctx
        profiler = (StepTracer(self.run_dir / "trace", cfg.trace_steps, device, skip=1 if len(sampler) > 1 else 0)
                    if cfg.trace_steps > 0 else None)
        steps_per_epoch = len(sampler)
        with _progress(self.progress) as bar:
            task = bar.add_task(f"{cfg.method} {cfg.arch}", total=cfg.epochs * steps_per_epoch,
                                completed=state.epoch * steps_per_epoch, info="")
            for epoch in range(state.epoch, cfg.epochs):
                lr = lr_at_epoch(cfg.lr, cfg.milestones, cfg.gamma, epoch)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                ctx.epoch, ctx.step = epoch, 0
                profiled = profiler is not None and not profiler.finished
                model.train()
                loss_sum = torch.zeros((), device=device)
                synchronize(device)
                t0 = time.perf_counter()
                for i, (x, y) in enumerate(sampler):
                    if profiled:
                        profiler.before_step(i)
                    loss_sum += step(x, y)
                    if profiled:
                        profiler.after_step()
                    bar.advance(task)
                synchronize(device)
                seconds = time.perf_counter() - t0
                if profiled:
                    profiler.stop()
                    for path in profiler.write():
                        log.info(f"  profile of {profiler.recorded} step(s): {path}")
                n_steps = ctx.step
                mean_loss = all_reduce_mean(loss_sum, self.dist).item() / max(n_steps, 1)  # over ranks
                if not torch.isfinite(torch.tensor(mean_loss)):
                    raise CrtBenchError(f"training diverged at epoch {epoch + 1}: loss is {mean_loss}")
                correct = noisy_correct(model, test, cfg.sigma)
                acc = correct.float().mean().item() if len(correct) else 0.0
                state.epoch, state.train_seconds = epoch + 1, state.train_seconds + seconds
                state.device_seconds += seconds * self.dist.world_size
                row = {
                    "run_id": self.run_id, "epoch": epoch + 1, "lr": lr, "loss": mean_loss, "seconds": seconds,
                    "samples_per_s": len(sampler.split) / seconds, "optimizer_steps": n_steps,
                    "noisy_test_acc": acc, "noisy_test_images": len(correct),
                    "noisy_test_correct": pack_bits(correct.numpy()), "profiled": bool(profiled), "time": _now(),
                }
                self._checkpoint(model, optimizer, sampler_gen, state, row)  # first: it carries the row
                self._append("epochs", [row])
                bar.update(task, info=f"epoch {epoch + 1}/{cfg.epochs} loss {mean_loss:.4f} noisy acc {acc:.3f}")
                log.info(f"  epoch {epoch + 1:>3}/{cfg.epochs}  lr {lr:.4g}  loss {mean_loss:.4f}  "
                         f"noisy test acc {acc:.3f}  {seconds:.1f}s  {len(sampler.split) / seconds:.0f} img/s")


class _NoLock:
    """The run lock of a rank other than 0: rank 0 holds the real one for the whole run."""

    def acquire(self) -> "_NoLock":
        return self

    def release(self) -> None:
        pass


def _progress(enabled: bool) -> Progress:
    return progress(TextColumn("{task.fields[info]}"), enabled=enabled)


def train_run(cfg: RunConfig, store: ResultsStore, *, progress: bool = True) -> str:
    """Train a new run; returns its run id."""
    return Trainer(cfg, store, progress=progress).run(resume=False)


def resume_run(run_id: str, store: ResultsStore, *, progress: bool = True) -> str:
    """Continue a run from its last checkpoint with the configuration it was started with."""
    run_dir = store.run_dir(run_id)
    if not (run_dir / "config.json").is_file():
        raise CrtBenchError(f"no run {run_id!r} to resume in {store.root}")
    cfg = RunConfig.from_json((run_dir / "config.json").read_text())
    return Trainer(cfg, store, run_id=run_id, progress=progress).run(resume=True)
