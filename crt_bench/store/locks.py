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

import errno
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


class LocksUnsupported(CrtBenchError):
    """The file system of a lock file refuses ``flock`` (ENOSYS, EOPNOTSUPP, ENOLCK); the message names the fix."""


UNSUPPORTED = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOLCK}


def _unsupported(err: OSError, path: str | Path) -> LocksUnsupported:
    return LocksUnsupported(
        f"file locks do not work in {Path(path).parent} (flock: {err.strerror or errno.errorcode.get(err.errno)}), and "
        "crt-bench needs them to keep one writer per run: on Lustre mount with `-o flock` (not localflock, "
        "which holds on one node only), on NFS mount without `nolock` and with `local_lock=none`, on BeeGFS set "
        "`tuneUseGlobalFileLocks=true`; or pass --results on a file system that has them (a local disk)")


def flock(fd: int, operation: int, path: str | Path) -> None:
    """``fcntl.flock``, with a file system that has no locks as one :class:`LocksUnsupported` line."""
    try:
        fcntl.flock(fd, operation)
    except OSError as err:
        if err.errno in UNSUPPORTED:
            raise _unsupported(err, path) from None
        raise


def check_locks(results: str | Path) -> str:
    """Preflight: a lock taken and released in the results folder (or its nearest existing parent, since
    nothing is created here but a probe file that is removed at once); one clear line where locks fail."""
    path = Path(results).expanduser()
    folder = next(p for p in (path, *path.absolute().parents) if p.is_dir())
    probe = folder / f".preflight-lock-{socket.gethostname()}-{os.getpid()}"
    try:
        with ProcessLock(probe, "the preflight's probe lock"):
            pass
    finally:
        probe.unlink(missing_ok=True)
    return f"locks: flock works in {folder} (taken and released)"


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
            _lock_exclusive(fd, self.path)
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
            try:
                flock(fd, fcntl.LOCK_UN, self.path)
            finally:
                os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "ProcessLock":
        return self.acquire()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _lock_exclusive(fd: int, path: str | Path) -> None:
    for attempt in range(ACQUIRE_TRIES):
        try:
            flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, path)
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
        flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB, path)
    except BlockingIOError:
        return True
    else:
        flock(fd, fcntl.LOCK_UN, path)
        return False
    finally:
        os.close(fd)
