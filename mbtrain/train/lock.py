"""One trainer per run directory: an exclusive lock held for the whole of training.

Two trainers on one run directory rewrite each other's config.yaml, truncate each other's
metrics.jsonl, remove each other's saves in flight and race on `checkpoints/latest`. Rank 0
of a training run takes `<run.dir>/.mbtrain.lock` before it touches anything in the
directory and holds it until the process ends; every rank learns the outcome before going on.

The lock is `flock(2)` on that file: the kernel drops it when the holder dies, however it
dies (SIGKILL, node crash with NFSv4 lease expiry), so a stale lock of a dead process never
blocks a restart and there is nothing to clean up. The file's content (host, pid, Slurm job,
start time) only serves the error message. File systems without flock support (ENOLCK, some
NFS mounts) fall back to creating the file exclusively; a holder on this host that no longer
runs is then recognised as stale, one on another host is refused (remove the file by hand).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import time
from pathlib import Path

from mbtrain.errors import MbtrainError

LOCK_NAME = ".mbtrain.lock"


class RunDirLocked(MbtrainError):
    """Another live process trains in this run directory."""


def _holder_text(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        return "another process"
    job = f", Slurm job {info['slurm_job']}" if info.get("slurm_job") else ""
    return f"pid {info.get('pid')} on {info.get('host')}{job}, since {info.get('started')}"


def _describe_self() -> str:
    return json.dumps(
        {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "slurm_job": os.environ.get("SLURM_JOB_ID"),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
    )


class RunDirLock:
    """`acquire()` or raise RunDirLocked naming the holder; `release()` (or process exit) frees."""

    def __init__(self, run_dir: str | Path) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None
        self._exclusive_file = False

    def acquire(self) -> RunDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise RunDirLocked(self._busy_message()) from None
            if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                return self._acquire_exclusive_file()
            raise
        os.ftruncate(fd, 0)
        os.write(fd, _describe_self().encode())
        self._fd = fd
        return self

    def _busy_message(self) -> str:
        return (
            f"{self.path.parent}: another trainer is using this run directory "
            f"({_holder_text(self.path)}); wait for it to end, stop it, or use another run.dir"
        )

    def _acquire_exclusive_file(self) -> RunDirLock:
        """Fallback without flock: the file's existence is the lock."""
        lock = self.path.with_name(LOCK_NAME + ".excl")
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if not self._stale(lock):
                    raise RunDirLocked(
                        f"{self.path.parent}: another trainer is using this run directory "
                        f"({_holder_text(lock)}); if it is gone, remove {lock}"
                    ) from None
                lock.unlink(missing_ok=True)
                continue
            os.write(fd, _describe_self().encode())
            os.close(fd)
            self.path, self._exclusive_file = lock, True
            return self
        raise RunDirLocked(self._busy_message())

    @staticmethod
    def _stale(lock: Path) -> bool:
        try:
            info = json.loads(lock.read_text())
        except (OSError, ValueError):
            return False
        if info.get("host") != socket.gethostname():
            return False  # cannot tell whether a process on another host still runs
        try:
            os.kill(int(info["pid"]), 0)
        except ProcessLookupError:
            return True
        except (PermissionError, KeyError, ValueError, TypeError):
            return False
        return False

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None
        if self._exclusive_file:
            self.path.unlink(missing_ok=True)
            self._exclusive_file = False


def _flock_holders(path: Path) -> list[int] | None:
    """Pids holding a flock on `path`, read from /proc/locks without taking the lock (taking
    it, even for a moment, would refuse a trainer starting at that moment); None where the
    kernel does not say (not Linux, or a file system whose locks it does not list)."""
    try:
        st = path.stat()
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    where = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    pids = []
    for line in table.splitlines():
        fields = line.split()
        if "->" in fields or len(fields) < 6:
            continue  # a waiter, not a holder
        if fields[1] == "FLOCK" and fields[5] == where:
            pids.append(int(fields[4]))
    return pids


def run_dir_in_use(run_dir: str | Path) -> str | None:
    """Who trains in `run_dir` right now (a description), or None if nobody does."""
    lock = RunDirLock(run_dir)
    if not lock.path.exists() and not lock.path.with_name(LOCK_NAME + ".excl").exists():
        return None
    if lock.path.exists() and (holders := _flock_holders(lock.path)) is not None:
        return _holder_text(lock.path) if holders else None
    try:
        lock.acquire()
    except RunDirLocked:
        return _holder_text(lock.path)
    lock.release()
    return None
