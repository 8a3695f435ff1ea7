"""Watching submitted jobs: their output on the console as it is written, and stopping them together.

submitit's local executor runs each job in a subprocess whose output goes to log files under
``results/submitit/``; a newcomer watching ``make reproduce`` would otherwise see nothing for the whole
length of a job. :class:`JobWatch` copies every new line of a running job's logs to the console,
prefixed with the job's name. :func:`~crt_bench.core.signals.stop_signals` turns SIGTERM (what ``kill``, SLURM and
schedulers send) into the same ``KeyboardInterrupt`` as Ctrl-C, so that one ``except`` stops the
grid's workers too: a worker left running after its parent died would race the next invocation.
"""
from __future__ import annotations

import contextlib
import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.text import Text

from crt_bench.core.signals import stop_signals
from crt_bench.grid.slurm import ended_without_result

STOP_GRACE_S = 120.0  # a stopped job checkpoints and marks its run interrupted; then it is killed


def _log_paths(handle: Any) -> list[Path]:
    paths = getattr(handle, "paths", None)
    if paths is None:  # the inline executor's jobs: in-process, their output is already on the console
        return []
    from submitit.local.debug import DebugJob  # a handle with log paths is submitit's

    if isinstance(handle, DebugJob):  # in-process: its output is already on the console
        return []
    out = [Path(paths.stdout), Path(paths.stderr)]
    return list(dict.fromkeys(out))


class JobWatch:
    """Streams the new lines of running jobs' logs to ``console``; stops all of them on request."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.handles: dict[str, Any] = {}
        self.labels: dict[str, str] = {}
        self._offsets: dict[Path, int] = {}
        self._partial: dict[Path, str] = {}
        self._in_traceback: set[Path] = set()  # a traceback ends the job: the rest of that log is not progress

    def add(self, key: str, handle: Any, label: str | None = None) -> None:
        """Follow ``handle`` under ``key``; its lines are prefixed with ``label`` (default: the key)."""
        self.handles[key] = handle
        self.labels[key] = label or key

    def remove(self, key: str) -> None:
        handle = self.handles.pop(key, None)
        if handle is not None:
            self._pump(self.labels.pop(key), handle, final=True)

    def pump(self) -> None:
        """Print what every running job wrote since the last call."""
        for key, handle in list(self.handles.items()):
            self._pump(self.labels[key], handle, final=False)

    def _pump(self, label: str, handle: Any, *, final: bool) -> None:
        for path in _log_paths(handle):
            if not path.is_file():
                continue
            with path.open("rb") as f:
                f.seek(self._offsets.get(path, 0))
                chunk = f.read()
                self._offsets[path] = f.tell()
            text = self._partial.pop(path, "") + chunk.decode("utf-8", errors="replace").replace("\r", "\n")
            lines = text.split("\n")
            if not final:
                self._partial[path], lines = lines[-1], lines[:-1]
            for line in lines:
                if line.startswith("Traceback (most recent call last)") or "submitit ERROR" in line:
                    self._in_traceback.add(path)  # the grid prints the job's error itself, whole, when it ends
                if path in self._in_traceback or not line.strip() or _submitit_noise(line):
                    continue
                self.console.print(Text.assemble((f"[{label}] ", "dim"), line.rstrip()), soft_wrap=True,
                                   highlight=False)

    def stop_all(self, grace_s: float = STOP_GRACE_S) -> list[str]:
        """Ask every running job to stop (SIGTERM: checkpoint, mark interrupted), wait, then kill stragglers."""
        stopped = [self.labels[key] for key in self.handles]
        for handle in self.handles.values():
            _terminate(handle)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            left = {key: h for key, h in self.handles.items() if not _finished(h)}
            if not left or len(ended_without_result(left)) == len(left):  # scancelled: no result will come
                break
            self.pump()
            time.sleep(0.2)
        for handle in self.handles.values():
            if not _finished(handle):
                with contextlib.suppress(Exception):
                    handle.cancel(check=False)
        for key in list(self.handles):
            self.remove(key)
        return stopped


def _submitit_noise(line: str) -> bool:
    """submitit's own bookkeeping lines (job start/finish, pickling) are not the job's progress."""
    return "submitit INFO" in line or "submitit WARNING" in line


def _finished(handle: Any) -> bool:
    try:
        return bool(handle.done())
    except Exception:  # noqa: BLE001 - a job whose state cannot be read is treated as gone
        return True


def _terminate(handle: Any) -> None:
    process = getattr(handle, "_process", None)  # submitit's LocalJob: the controller forwards SIGTERM
    try:
        if process is not None:
            process.send_signal(signal.SIGTERM)
        else:
            handle.cancel(check=False)  # SLURM: scancel (SLURM sends SIGTERM, then SIGKILL after its grace)
    except Exception:  # noqa: BLE001 - already gone
        pass


def follow(handle: Any, label: str, console: Console, poll_s: float = 1.0) -> Any:
    """Wait for one job while streaming its output; Ctrl-C or SIGTERM stops it too. Returns its result."""
    watch = JobWatch(console)
    watch.add(label, handle)
    try:
        with stop_signals((signal.SIGTERM,)):
            while not handle.done():
                watch.pump()
                time.sleep(poll_s)
    except KeyboardInterrupt:
        watch.stop_all()
        raise
    watch.remove(label)
    return handle.result()
