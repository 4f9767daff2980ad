"""A hung collective does not hold the allocation forever: the watchdog dumps every rank's
stacks, then ends the rank with code 76, which the batch script requeues."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from mbtrain.monitor.metrics import read_metrics
from mbtrain.monitor.watchdog import HANG_EXIT_CODE
from tests.support.launch import launch, read_logs, wait

STUCK = """
import sys, time
from mbtrain.monitor.watchdog import Watchdog
w = Watchdog(sys.argv[1], 0, factor=2.0, min_seconds=1.0, exit_after=1.0).start()
w.beat(1)
time.sleep(60)  # a step that never ends
"""


def test_watchdog_ends_a_stuck_process_with_its_own_code(tmp_path):
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-c", STUCK, str(tmp_path)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == HANG_EXIT_CODE, out.stderr
    assert time.monotonic() - t0 < 20
    dump = (tmp_path / "hang_rank0.txt").read_text()
    assert (
        "step 2 has run" in dump and "exiting with 76" in dump and "most recent call first" in dump
    )


@pytest.mark.slow
@pytest.mark.dist
def test_rank_stuck_in_a_collective_exits_76(tiny_args, tmp_path):
    """Rank 1 is frozen (SIGSTOP, as a wedged GPU or a dead node would be); rank 0 waits in
    its next all-reduce until its watchdog ends it."""
    run_dir = tmp_path / "run"
    args = [*tiny_args, f"run.dir={run_dir}", "train.steps=100000", "checkpoint.every=0",
            "train.watchdog_min_s=3", "train.watchdog_factor=2", "train.watchdog_exit_s=3"]  # fmt: skip
    procs = launch(2, args, tmp_path / "logs")
    try:
        deadline = time.time() + 240
        while not any(r.get("step", 0) >= 3 for r in read_metrics(run_dir / "metrics.jsonl")):
            assert time.time() < deadline and all(p.poll() is None for p in procs), read_logs(
                tmp_path / "logs"
            )
            time.sleep(0.1)
        procs[1].send_signal(signal.SIGSTOP)
        deadline = time.time() + 60
        while procs[0].poll() is None and time.time() < deadline:
            time.sleep(0.2)
        assert procs[0].returncode == HANG_EXIT_CODE, read_logs(tmp_path / "logs")
    finally:
        procs[1].send_signal(signal.SIGCONT)
        procs[1].kill()
        wait(procs, tmp_path / "logs", timeout=30, ok=(HANG_EXIT_CODE, -9))
    dump = (run_dir / "logs" / "hang_rank0.txt").read_text()
    assert "exiting with 76" in dump
