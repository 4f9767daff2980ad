"""Launcher for the distributed tests: N processes on gloo, one machine, CPU.

`launch(scenario, world_size, tmp_path, **args)` runs `tests/parallel/worker.py <scenario>`
in N processes with the environment torchrun would give them (MASTER_ADDR/PORT, RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) and returns what rank 0 wrote to result.json.
Subprocesses (not torch.multiprocessing) keep each rank's DeepSpeed import and accelerator
choice independent of the pytest process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers(
    scenario: str, world_size: int, out_dir: Path, timeout: float = 240, **args
) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    port = str(_free_port())
    procs = []
    for rank in range(world_size):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": port,
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
            "LOCAL_WORLD_SIZE": str(world_size),
            "DS_ACCELERATOR": "cpu",
            "OMP_NUM_THREADS": "1",
            "PYTHONPATH": str(REPO),
        }
        log = open(out_dir / f"rank{rank}.log", "w")  # closed after the wait
        procs.append(
            (
                subprocess.Popen(
                    [sys.executable, str(WORKER), scenario, str(out_dir), json.dumps(args)],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                ),
                log,
            )
        )
    deadline = time.monotonic() + timeout
    failed = None
    while any(p.poll() is None for p, _ in procs):
        if time.monotonic() > deadline:
            failed = "timeout"
            break
        if any(p.poll() not in (None, 0) for p, _ in procs):
            time.sleep(2)  # let the others report, then stop them
            failed = "a rank failed"
            break
        time.sleep(0.2)
    for p, log in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
    codes = [p.returncode for p, _ in procs]
    if failed or any(codes):
        logs = "\n".join(
            f"--- rank {r} (exit {codes[r]}) ---\n" + (out_dir / f"rank{r}.log").read_text()[-4000:]
            for r in range(world_size)
        )
        raise AssertionError(f"{scenario} on {world_size} processes: {failed or 'failed'}\n{logs}")
    return json.loads((out_dir / "result.json").read_text())


@pytest.fixture
def launch(tmp_path):
    def _launch(scenario: str, world_size: int, sub: str = "run", **args) -> dict:
        return run_workers(scenario, world_size, tmp_path / sub, **args)

    return _launch
