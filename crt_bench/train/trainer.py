"""A training run, start to end: the outline is :meth:`Trainer.run`; one epoch is crt_bench.train.epoch.

    set up       data, teacher (CRT), the trained model, optimizer, batches      (nothing written yet)
    start        a new run's folder, lock and config.json; or resume the checkpoint
    step engine  DDP wrap, channels-last, torch.compile (crt_bench.train.step)  -> the "running" row
    warm up      a compiled run's graphs, in undone steps (not timed in epoch 1)
    for epoch:   train_epoch (lr from the step schedule; per loader batch, per method minibatch:
                     loss = method.loss(model, x, y, ctx); backward; optimizer step)
                 evaluate   noisy test accuracy (not timed)
                 checkpoint checkpoint.pt, written atomically, holding the epoch's row (resume continues here)
                 write row  the epoch's row -> epochs table
    finish       model.pt -> the "finished" row; the run's table parts compacted
    (a stop or failure anywhere after the "running" row writes an "interrupted" or "failed" row)

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

import logging
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
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
from crt_bench.core.provenance import environment
from crt_bench.core.states import RunStatus
from crt_bench.core.tf32 import check_tf32, tf32_mode
from crt_bench.data.batches import RankBatches, ResidentBatches, epoch_batches
from crt_bench.data.catalog import dataset_info
from crt_bench.data.datasets import load_split
from crt_bench.data.imagenet import FolderBatches, is_folder_dataset
from crt_bench.data.split import Split
from crt_bench.methods.registry import MethodSpec, StepContext, get_method
from crt_bench.models.files import CHECKPOINT_FILE, MODEL_FILE, LoadedModel, model_metadata
from crt_bench.parallel.ddp import wrap_model
from crt_bench.parallel.env import all_reduce_mean, broadcast_object, setup
from crt_bench.store.locks import ProcessLock, run_lock
from crt_bench.store.store import ResultsStore
from crt_bench.train.checkpoint import RunState, restore_checkpoint, save_checkpoint
from crt_bench.train.epoch import train_epoch
from crt_bench.train.evaluate import noisy_correct
from crt_bench.train.records import RunRecords, now
from crt_bench.train.step import TrainStep, make_optimizer, trained_model, warmup_batches
from crt_bench.train.teacher import FrozenTeacher, load_teacher
from crt_bench.train.trace import StepTracer, traced

log = logging.getLogger(__name__)


def new_run_id(cfg: RunConfig) -> str:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{cfg.method}-{cfg.arch}-{cfg.dataset}-s{cfg.sigma:g}-{stamp}-{uuid.uuid4().hex[:6]}"


@dataclass
class _Setup:
    """What a run trains with, built by :meth:`Trainer._set_up` before anything is written."""

    train: Split
    test: Split
    teacher: LoadedModel | None  # as loaded (its metadata goes into the rows)
    frozen: FrozenTeacher | None  # what the loss calls (CRT)
    model: nn.Module  # the trained (and saved) module
    optimizer: torch.optim.Optimizer
    batches: ResidentBatches | RankBatches | FolderBatches
    sampler_gen: torch.Generator  # the batches' random state (checkpointed)
    tracer: StepTracer | None  # ``trace_steps``


class Trainer(RunRecords):
    """Runs one configured training run against a results store (its rows: crt_bench.train.records)."""

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

    # -- the outline of a run ---------------------------------------------------------------------
    def run(self, resume: bool = False) -> str:
        """Train (or continue) the run; returns its id. Each line is one short method below."""
        with self._locked(resume) as lock:
            if lock is None:  # its model.pt was there: the "finished" row is now too, nothing to train
                return self.run_id
            run = self._set_up()
            state = self._start_or_resume(run, resume, lock)
            step = self._step_engine(run)
            self._append("runs", [self._run_row(RunStatus.RUNNING, state, run.teacher)])
            with self._stop_recorded(state, run.teacher):
                self._warm_up(step, run.train)
                with tf32_mode(self.cfg.tf32), self._progress_bar(state, len(run.batches)) as bar:
                    for epoch in range(state.epoch, self.cfg.epochs):
                        trained = self._train_epoch(step, run, epoch, bar)
                        correct = noisy_correct(run.model, run.test, self.cfg.sigma)  # evaluate (not timed)
                        state.add_epoch(trained["seconds"], self.dist.world_size)
                        row = self._epoch_row(state, trained, correct, len(run.batches.split))
                        self._checkpoint(run, state, row)  # first: it carries the row
                        self._append("epochs", [row])
                        self._report_epoch(row, bar)
                self._finish(run, state)
            self._compact()
        return self.run_id

    # -- the parts of a run -----------------------------------------------------------------------
    @contextmanager
    def _locked(self, resume: bool) -> Iterator[ProcessLock | _NoLock | None]:
        """The run's lock, held for the whole run (rank 0's; a new run takes it once its folder exists).

        A resume of a run whose ``model.pt`` exists completes its "finished" row (a kill came before it)
        and yields None, or refuses it: finished already.
        """
        lock = run_lock(self.run_dir, self.run_id) if self.dist.is_main else _NoLock()
        try:
            completed = False
            if resume:
                if self._finished():  # checked again under the lock; refusing here writes nothing
                    raise CrtBenchError(f"run {self.run_id!r} already finished; nothing to resume")
                lock.acquire()
                if (self.run_dir / MODEL_FILE).is_file():
                    if not self._complete_finished():
                        raise CrtBenchError(f"run {self.run_id!r} already finished; nothing to resume")
                    completed = True
            yield None if completed else lock
        finally:
            lock.release()

    def _set_up(self) -> _Setup:
        """Data, teacher, model, optimizer and batches, from the run's seed; writes nothing."""
        cfg, device = self.cfg, self.device
        torch.manual_seed(cfg.seed)
        train = load_split(cfg.dataset, "train", data_dir=cfg.data_dir, limit=cfg.train_limit, seed=cfg.seed).to(device)
        test = load_split(cfg.dataset, "test", data_dir=cfg.data_dir, limit=cfg.test_limit, seed=cfg.seed).to(device)
        teacher = (load_teacher(cfg.teacher, str(self.store.root), self.info, device, cfg.sigma,
                                cfg.teacher_input_layer, same_sigma=self.spec.compose is None)
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
            self._check_teacher_output(teacher.model, train)
        optimizer = make_optimizer(cfg, model)
        batches, sampler_gen = self._batches(train)
        tracer = (StepTracer(self.run_dir / "trace", cfg.trace_steps, device, skip=1 if len(batches) > 1 else 0)
                  if cfg.trace_steps > 0 else None)
        return _Setup(train, test, teacher, frozen, model, optimizer, batches, sampler_gen, tracer)

    def _check_teacher_output(self, teacher: nn.Module, train: Split) -> None:
        with torch.no_grad():
            out = teacher(train.x[:2])
        if out.shape != (min(2, len(train)), self.info.num_classes):
            raise CrtBenchError(f"teacher output shape {tuple(out.shape)} does not match the student's "
                                f"{self.info.num_classes} classes")

    def _batches(self, train: Split) -> tuple[ResidentBatches | RankBatches | FolderBatches, torch.Generator]:
        """This process's loader batches of every epoch, and the generator they are drawn with."""
        cfg = self.cfg
        if is_folder_dataset(cfg.dataset):  # ImageNet: DataLoader workers, pinned memory (crt_bench.data.imagenet)
            sampler_gen = torch.Generator(device="cpu").manual_seed(cfg.seed)  # DataLoader's generators are CPU ones
            return FolderBatches(train, cfg.batch_size, generator=sampler_gen, device=self.device,
                                 rank=self.dist.rank, world_size=self.dist.world_size), sampler_gen
        # drawn on the data's device: no host copy per batch
        sampler, sampler_gen = epoch_batches(train, cfg.batch_size, augment=self.info.augment, seed=cfg.seed)
        if self.dist.enabled:  # this rank's block of every global batch (the same batches as one process)
            sampler = RankBatches(sampler, self.dist)
        return sampler, sampler_gen

    def _start_or_resume(self, run: _Setup, resume: bool, lock: ProcessLock | _NoLock) -> RunState:
        """A new run's folder, lock and config.json; or the checkpoint's weights, optimizer and random states."""
        if resume and (self.run_dir / CHECKPOINT_FILE).is_file():
            state, ckpt = restore_checkpoint(self.run_dir / CHECKPOINT_FILE, self.run_id, run.model, run.optimizer,
                                             run.sampler_gen, self.device)
            self._write_missing_epoch_row(ckpt)
            self.kept_epoch = state.epoch
            return state
        if not resume and self.dist.is_main:  # a new run: its folder appears only once its inputs were accepted
            self.run_dir.mkdir(parents=True, exist_ok=False)
            lock.acquire()
            atomic_write_bytes(self.run_dir / "config.json", self.cfg.to_json().encode())
        return RunState(started=now())  # (a resume that stopped before its first checkpoint starts over)

    def _step_engine(self, run: _Setup) -> TrainStep:
        """The step: DDP wrap, channels-last, torch.compile as configured; records the settings resolved."""
        cfg, device = self.cfg, self.device
        ctx = StepContext(sigma=cfg.sigma, hparams=self.hparams, epochs=cfg.epochs, teacher=run.frozen)
        step = TrainStep(self.spec, run.model, run.optimizer, ctx, device, cfg.engine_options(),
                         wrap=lambda net: wrap_model(net, device, self.dist, cfg.sync_bn))
        frozen = run.frozen
        self.engine = {"precision": step.precision, "channels_last": step.channels_last, "compile": cfg.compile,
                       "teacher_precision": frozen.precision if frozen else "",
                       "teacher_folded_batchnorms": frozen.folded if frozen else 0, "sync_bn": cfg.sync_bn,
                       "tf32": step.tf32, "warmup_seconds": 0.0}
        return step

    def _warm_up(self, step: TrainStep, train: Split) -> None:
        """A compiled run compiles in undone, untimed steps, not in epoch 1 (crt_bench.train.step.TrainStep.warm_up)."""
        cfg = self.cfg
        if cfg.compile and not is_folder_dataset(cfg.dataset):
            self.engine["warmup_seconds"] = step.warm_up(warmup_batches(
                train.x, train.y, cfg.batch_size, self.dist.world_size, self.dist.rank))

    def _train_epoch(self, step: TrainStep, run: _Setup, epoch: int, advance: Callable[[], None]) -> dict[str, Any]:
        """crt_bench.train.epoch.train_epoch at the schedule's lr, traced while ``trace_steps`` are left.

        Returns the epoch row's training columns: lr, loss (the mean over steps and ranks), seconds, steps.
        """
        cfg = self.cfg
        tracer = run.tracer if run.tracer is not None and not run.tracer.finished else None
        lr = lr_at_epoch(cfg.lr, cfg.milestones, cfg.gamma, epoch)
        stats = train_epoch(step, traced(run.batches, tracer, advance), epoch, lr)
        if tracer is not None:
            tracer.stop()
            for path in tracer.write():
                log.info(f"  profile of {tracer.recorded} step(s): {path}")
        mean_loss = all_reduce_mean(stats.loss_sum, self.dist).item() / max(stats.steps, 1)  # over ranks
        if not torch.isfinite(torch.tensor(mean_loss)):
            raise CrtBenchError(f"training diverged at epoch {epoch + 1}: loss is {mean_loss}")
        return {"lr": lr, "loss": mean_loss, "seconds": stats.seconds, "optimizer_steps": stats.steps,
                "profiled": tracer is not None}

    def _epoch_row(self, state: RunState, trained: dict[str, Any], correct: torch.Tensor, images: int) -> dict[str, Any]:
        """The epochs table's row of the epoch just done (``state.epoch``): training figures, noisy test accuracy."""
        seconds = trained["seconds"]
        return {
            "run_id": self.run_id, "epoch": state.epoch, "lr": trained["lr"], "loss": trained["loss"],
            "seconds": seconds, "samples_per_s": images / seconds, "optimizer_steps": trained["optimizer_steps"],
            "noisy_test_acc": correct.float().mean().item() if len(correct) else 0.0,
            "noisy_test_images": len(correct), "noisy_test_correct": pack_bits(correct.numpy()),
            "profiled": bool(trained["profiled"]), "time": now(),
        }

    def _checkpoint(self, run: _Setup, state: RunState, epoch_row: dict[str, Any]) -> None:
        if self.dist.is_main:
            save_checkpoint(self.run_dir / CHECKPOINT_FILE, arch=self.cfg.arch, info=self.info, sigma=self.cfg.sigma,
                            method=self.cfg.method, run_id=self.run_id, model=run.model, optimizer=run.optimizer,
                            sampler_gen=run.sampler_gen, state=state, epoch_row=epoch_row, device=self.device)
            self.kept_epoch = state.epoch

    def _report_epoch(self, row: dict[str, Any], bar: _Bar) -> None:
        cfg, epoch, loss, acc, seconds = self.cfg, row["epoch"], row["loss"], row["noisy_test_acc"], row["seconds"]
        bar.show(f"epoch {epoch}/{cfg.epochs} loss {loss:.4f} noisy acc {acc:.3f}")
        log.info(f"  epoch {epoch:>3}/{cfg.epochs}  lr {row['lr']:.4g}  loss {loss:.4f}  "
                 f"noisy test acc {acc:.3f}  {seconds:.1f}s  {row['samples_per_s']:.0f} img/s")

    def _finish(self, run: _Setup, state: RunState) -> None:
        """``model.pt``, then the "finished" row."""
        if self.dist.is_main:
            cfg = self.cfg
            final = model_metadata(cfg.arch, self.info, sigma=cfg.sigma, method=cfg.method, run_id=self.run_id,
                                   model=run.model)
            final["state_dict"] = run.model.state_dict()
            atomic_torch_save(final, self.run_dir / MODEL_FILE)
            self._append("runs", [self._run_row(RunStatus.FINISHED, state, run.teacher)])

    def _compact(self) -> None:
        if self.dist.is_main:  # the run is whole: its parts become one (never fatal)
            self.store.compact_run(self.run_id, ("runs", "epochs"))

    @contextmanager
    def _progress_bar(self, state: RunState, steps_per_epoch: int) -> Iterator[_Bar]:
        with _progress(self.progress) as bar:
            task = bar.add_task(f"{self.cfg.method} {self.cfg.arch}", total=self.cfg.epochs * steps_per_epoch,
                                completed=state.epoch * steps_per_epoch, info="")
            yield _Bar(bar, task)

    @contextmanager
    def _stop_recorded(self, state: RunState, teacher: LoadedModel | None) -> Iterator[None]:
        """A stop (Ctrl-C, SIGTERM, submitit's requeue, a full disk) or a failure inside: its run row, then re-raised."""
        try:
            yield
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
                log.warning(f"run {self.run_id} stopped after epoch {state.epoch}/{self.cfg.epochs}; "
                            f"continue it with `crt-bench run --resume {self.run_id}`")
                err.reported = True  # type: ignore[attr-defined]  (the CLI need not say it again)
            raise


class _NoLock:
    """The run lock of a rank other than 0: rank 0 holds the real one for the whole run."""

    def acquire(self) -> "_NoLock":
        return self

    def release(self) -> None:
        pass


class _Bar:
    """The run's progress bar: one tick per loader batch, the last epoch's figures beside it."""

    def __init__(self, bar: Progress, task: Any) -> None:
        self.bar, self.task = bar, task

    def __call__(self) -> None:
        self.bar.advance(self.task)

    def show(self, info: str) -> None:
        self.bar.update(self.task, info=info)


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
