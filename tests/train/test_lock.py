"""One trainer per run directory: a second one is refused with the holder named; the lock of
a process that died (even by SIGKILL) never blocks a restart. Two real trainers on one run
directory: tests/faults/test_faults.py."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mbtrain.train.lock import RunDirLock, RunDirLocked, run_dir_in_use

HOLD = """
import sys, time
from mbtrain.train.lock import RunDirLock
RunDirLock(sys.argv[1]).acquire()
print("held", flush=True)
time.sleep(600)
"""


def hold_in_child(run_dir: Path) -> subprocess.Popen:
    p = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True
    )
    assert p.stdout.readline().strip() == "held"
    return p


def test_lock_is_exclusive_and_dies_with_its_holder(tmp_path):
    holder = hold_in_child(tmp_path)
    try:
        with pytest.raises(RunDirLocked, match=rf"pid {holder.pid} on "):
            RunDirLock(tmp_path).acquire()
        assert str(holder.pid) in run_dir_in_use(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert run_dir_in_use(tmp_path) is None  # the kernel dropped the dead holder's lock
    lock = RunDirLock(tmp_path).acquire()
    lock.release()
    RunDirLock(tmp_path).acquire().release()


def test_lock_without_flock_recognises_a_dead_holder(tmp_path, monkeypatch):
    """File systems without flock (ENOLCK): the exclusive-file fallback."""
    import errno
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    lock = RunDirLock(tmp_path).acquire()
    with pytest.raises(RunDirLocked, match="another trainer"):
        RunDirLock(tmp_path).acquire()
    lock.release()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    import json
    import socket

    (tmp_path / ".mbtrain.lock.excl").write_text(
        json.dumps({"host": socket.gethostname(), "pid": int(dead), "started": "then"})
    )
    RunDirLock(tmp_path).acquire().release()  # stale: that pid is gone
