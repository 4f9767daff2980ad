"""Launcher for the distributed tests: N processes on gloo, one machine, CPU.

The `launch(scenario, world_size, **args)` fixture runs `tests/parallel/worker.py <scenario>`
in N processes with the environment torchrun would give them (MASTER_ADDR/PORT, RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE) and returns what rank 0 wrote to result.json.
Subprocesses (not torch.multiprocessing) keep each rank's DeepSpeed import and accelerator
choice independent of the pytest process; started and awaited by tests/support/launch.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.support.launch import REPO, read_logs, wait
from tests.support.launch import launch as start_ranks

WORKER = Path(__file__).with_name("worker.py")


def run_workers(
    scenario: str, world_size: int, out_dir: Path, timeout: float = 240, **args
) -> dict:
    procs = start_ranks(
        world_size,
        [scenario, str(out_dir), json.dumps(args)],
        out_dir,
        script=[sys.executable, str(WORKER)],
        # One thread per rank also with one rank: results are compared across world sizes.
        extra_env={"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)},
    )
    codes = wait(procs, out_dir, timeout, ok=(0,))
    if any(codes):
        raise AssertionError(
            f"{scenario} on {world_size} processes: exit codes {codes}\n{read_logs(out_dir)}"
        )
    return json.loads((out_dir / "result.json").read_text())


@pytest.fixture
def launch(tmp_path):
    def _launch(scenario: str, world_size: int, sub: str = "run", **args) -> dict:
        return run_workers(scenario, world_size, tmp_path / sub, **args)

    return _launch
