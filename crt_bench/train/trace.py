"""``--trace-steps K``: a torch.profiler recording of K training steps, to see where the time goes.

The first loader batch is skipped (allocator and autotuning warm-up), the next K are recorded, then
the profiler stops; the files are written after the epoch's clock has stopped:

    <run dir>/trace/trace.json     Chrome trace: open in https://ui.perfetto.dev or chrome://tracing
    <run dir>/trace/ops.txt        operators by total and by self time (device time on CUDA)

The regions ``crt_bench.loss``, ``crt_bench.backward``, ``crt_bench.optimizer`` and
``crt_bench.teacher`` (see :mod:`crt_bench.train.step`) name the parts of a step in both files.
The recorded steps run slower than unprofiled ones: the epoch that holds them is flagged ``profiled``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

import torch
from torch.profiler import ProfilerActivity, profile

ROW_LIMIT = 40
T = TypeVar("T")


class StepTracer:
    """Records steps ``skip .. skip + steps - 1`` (counted from 0) of the loop it is told about."""

    def __init__(self, out_dir: Path, steps: int, device: torch.device, skip: int = 1) -> None:
        self.out_dir, self.steps, self.device, self.skip = Path(out_dir), int(steps), device, int(skip)
        self.recorded = 0
        self._prof: profile | None = None
        self._stopped = False
        self.written: list[Path] = []

    @property
    def active(self) -> bool:
        return self._prof is not None and not self._stopped

    @property
    def finished(self) -> bool:
        return self._stopped or self.steps <= 0

    def before_step(self, index: int) -> None:
        if self._prof is None and not self.finished and index >= self.skip:
            activities = [ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(ProfilerActivity.CUDA)
            self._prof = profile(activities=activities, record_shapes=True)
            self._prof.start()

    def after_step(self) -> None:
        if self.active:
            self._prof.step()
            self.recorded += 1
            if self.recorded >= self.steps:
                self.stop()

    def stop(self) -> None:
        if self.active:
            self._prof.stop()
            self._stopped = True

    def write(self) -> list[Path]:
        """Write the trace and the operator tables (once, after :meth:`stop`); returns the files."""
        if self._prof is None or not self._stopped or self.written:
            return self.written
        self.out_dir.mkdir(parents=True, exist_ok=True)
        trace = self.out_dir / "trace.json"
        self._prof.export_chrome_trace(str(trace))
        device_time = "cuda" if self.device.type == "cuda" else "cpu"
        events = self._prof.key_averages()
        tables = [
            f"torch.profiler: {self.recorded} training step(s) after skipping {self.skip}, device {self.device}\n",
            f"== by total {device_time} time (the crt_bench.* regions show the parts of a step) ==",
            events.table(sort_by=f"{device_time}_time_total", row_limit=ROW_LIMIT),
            f"== by self {device_time} time (the operators that dominate) ==",
            events.table(sort_by=f"self_{device_time}_time_total", row_limit=ROW_LIMIT),
        ]
        ops = self.out_dir / "ops.txt"
        ops.write_text("\n".join(tables) + "\n")
        self.written = [trace, ops]
        return self.written


def traced(batches: Iterable[T], tracer: StepTracer | None, advance: Callable[[], None]) -> Iterator[T]:
    """``batches``, with ``tracer`` (if any) told before and after each step, and ``advance`` called after it."""
    for i, batch in enumerate(batches):
        if tracer is not None:
            tracer.before_step(i)
        yield batch
        if tracer is not None:
            tracer.after_step()
        advance()
