"""One writer per run and per certification: an OS file lock that dies with its process.

Two processes driving the same run (two ``--resume`` of one id, or a sweep worker that outlived its
parent racing the parent's successor) would append duplicate epoch rows and two "finished" rows.
``fcntl.flock`` on a lock file is released by the kernel when the holder exits, however it exits
(SIGKILL, a dead node's process table going away), so there is no stale lock to clean up and the lock
file itself is never deleted (deleting it would let a third process lock a fresh inode while the
second still holds the old one).  The holder writes who it is (pid, host, start time, command) into
the file so that the refusal can name it.

Readers ask whether a lock is held (:func:`lock_is_held`, a shared lock taken and dropped at once), so
a writer that starts at that instant retries a few times before it refuses (:data:`ACQUIRE_TRIES`).
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from crt_bench.core.errors import CrtBenchError


ACQUIRE_TRIES = 5
ACQUIRE_PAUSE_S = 0.04
"""A writer tries this many times, this far apart, before :class:`LockHeld`: a reader's shared lock
lasts microseconds, a writer's the whole run."""


class LockHeld(CrtBenchError):
    """Another live process holds the lock; the message names it."""


class ProcessLock:
    """``with ProcessLock(path, "run X"):`` -- exclusive, non-blocking; refuses with :class:`LockHeld`."""

    def __init__(self, path: str | Path, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> "ProcessLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _lock_exclusive(fd)
        except BlockingIOError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise LockHeld(f"{self.what} is being driven by another process ({holder}; lock file {self.path}); "
                           "wait for it to finish or stop it, then run this again") from None
        except BaseException:
            os.close(fd)
            raise
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(sys.argv)[:500]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.ftruncate(fd, 0)  # the holder is gone; the next reader should not name it
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "ProcessLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _lock_exclusive(fd: int) -> None:
    for attempt in range(ACQUIRE_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == ACQUIRE_TRIES - 1:
                raise
            time.sleep(ACQUIRE_PAUSE_S)


def _read_holder(fd: int) -> dict[str, object]:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, object]) -> str:
    if not holder:
        return "holder unknown: it has not written its name yet"
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {holder.get('started', '?')}"
            + (f": {holder['command']}" if holder.get("command") else ""))


def run_lock(run_dir: str | Path, run_id: str) -> ProcessLock:
    """The lock of one training run: ``RUN_DIR/run.lock``."""
    return ProcessLock(Path(run_dir) / "run.lock", f"run {run_id}")


def cert_lock_name(cert_id: str) -> str:
    """The lock file name of one certification (in its run's folder, else ``RESULTS/locks``)."""
    return f"certify-{cert_id.rsplit('-', 1)[1]}.lock"


def lock_is_held(path: str | Path) -> bool:
    """Whether some process holds ``path``'s lock (a missing file is a free lock).

    A shared lock asked for without waiting and dropped at once.  flock locks belong to an open file
    description, so this new descriptor is refused even in the process that holds the lock.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
