"""Locks on cluster file systems: a results folder whose flock is refused (Lustre without ``-o flock``, NFS with
``nolock``) is one clear line naming the mount option, at preflight and at any lock, never a raw OSError."""
from __future__ import annotations

import errno
import fcntl

import pytest

from crt_bench.grid.preflight import preflight
from crt_bench.store import locks
from crt_bench.store.locks import LockHeld, LocksUnsupported, ProcessLock, check_locks, lock_is_held

UNSUPPORTED = [errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK]


@pytest.fixture
def refused_flock(monkeypatch, request):
    """fcntl.flock as a file system without locks answers: OSError(the errno)."""
    def flock(fd, operation):
        raise OSError(request.param, "faked by the test")

    monkeypatch.setattr(locks.fcntl, "flock", flock)
    return request.param


@pytest.mark.parametrize("refused_flock", UNSUPPORTED, indirect=True)
def test_a_file_system_without_flock_is_one_line_naming_the_mount_option(tmp_path, refused_flock):
    lock = tmp_path / "runs" / "r1" / "run.lock"
    with pytest.raises(LocksUnsupported, match=r"file locks do not work in .*-o flock.*local_lock=none") as info:
        ProcessLock(lock, "run r1").acquire()
    assert "\n" not in str(info.value)
    lock.write_text("")
    with pytest.raises(LocksUnsupported):
        lock_is_held(lock)
    with pytest.raises(LocksUnsupported, match=str(tmp_path)):
        preflight(datasets=set(), results=tmp_path / "results", device="cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]  # the probe file is gone


def test_another_oserror_is_not_taken_for_missing_locks(tmp_path, monkeypatch):
    def flock(fd, operation):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(locks.fcntl, "flock", flock)
    with pytest.raises(OSError) as info:
        ProcessLock(tmp_path / "x.lock", "run x").acquire()
    assert not isinstance(info.value, LocksUnsupported)


def test_preflight_takes_and_releases_a_lock_in_the_results_folder(tmp_path, monkeypatch):
    taken = []
    real = fcntl.flock
    monkeypatch.setattr(locks.fcntl, "flock", lambda fd, op: taken.append(op) or real(fd, op))
    line = check_locks(tmp_path / "not-yet")
    assert line == f"locks: flock works in {tmp_path} (taken and released)"
    assert fcntl.LOCK_EX | fcntl.LOCK_NB in taken and fcntl.LOCK_UN in taken
    assert list(tmp_path.iterdir()) == []  # nothing left behind, the results folder not created
    assert any(line.startswith("locks: flock works") for line in
               preflight(datasets=set(), results=tmp_path, device="cpu").lines)


def test_a_held_lock_still_refuses_a_second_writer(tmp_path):
    with ProcessLock(tmp_path / "run.lock", "run r"):
        assert lock_is_held(tmp_path / "run.lock")
        with pytest.raises(LockHeld):
            ProcessLock(tmp_path / "run.lock", "run r").acquire()
    assert not lock_is_held(tmp_path / "run.lock")
