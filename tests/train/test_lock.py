"""One trainer per run directory: a second one is refused with the holder named; the lock of
a process that died (even by SIGKILL) never blocks a restart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mbtrain.monitor.metrics import read_metrics
from mbtrain.train.lock import RunDirLock, RunDirLocked, run_dir_in_use
from tests.support.launch import launch, read_logs, run, wait

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


@pytest.mark.slow
def test_second_trainer_on_a_run_dir_is_refused(tiny_args, tmp_path):
    run_dir = tmp_path / "run"
    args = [*tiny_args, f"run.dir={run_dir}", "train.steps=400", "checkpoint.every=50"]
    first = launch(1, args, tmp_path / "first")
    try:
        deadline = time.time() + 240
        while not any("loss" in r for r in read_metrics(run_dir / "metrics.jsonl")):
            assert time.time() < deadline and first[0].poll() is None, read_logs(tmp_path / "first")
            time.sleep(0.1)
        config_before = (run_dir / "config.yaml").read_text()
        run(1, [*args, "train.seed=5"], tmp_path / "second", expect=1)
        log = read_logs(tmp_path / "second")
        assert "another trainer is using this run directory" in log and f"pid {first[0].pid}" in log
        assert "Traceback" not in log
        assert (run_dir / "config.yaml").read_text() == config_before  # untouched
        assert first[0].poll() is None  # the first one goes on
    finally:
        first[0].send_signal(signal.SIGUSR1)  # checkpoint and stop
        codes = wait(first, tmp_path / "first")
    assert codes == [75], read_logs(tmp_path / "first")
    steps = [r["step"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r]
    assert steps == list(range(1, steps[-1] + 1))  # nothing truncated or interleaved
    # The lock died with the first trainer: a restart resumes at once.
    run(1, [*args, "train.steps=" + str(steps[-1] + 2)], tmp_path / "third")
    assert "resumed from" in read_logs(tmp_path / "third")
    assert not os.path.exists(run_dir / ".mbtrain.lock.excl")
