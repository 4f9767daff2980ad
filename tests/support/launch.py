"""Start N real ranks of `mbtrain train` as separate processes, the way srun or torchrun would.

Each rank gets RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and MASTER_PORT;
the test can signal the ranks (as Slurm does on preemption) or kill them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_env(rank: int, world: int, port: int, extra: dict | None = None) -> dict:
    env = dict(os.environ)
    for k in [k for k in env if k.startswith("SLURM_")]:
        del env[k]
    env.update(
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
        LOCAL_WORLD_SIZE=str(world),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        DS_ACCELERATOR="cpu",
        OMP_NUM_THREADS="1" if world > 1 else env.get("OMP_NUM_THREADS", "2"),
        PYTHONWARNINGS="ignore",
        WANDB_SILENT="true",
    )
    env.update(extra or {})
    return env


def launch(
    world: int,
    args: list[str],
    log_dir: Path,
    script: list[str] | None = None,
    extra_env: dict | None = None,
) -> list[subprocess.Popen]:
    """Start `world` ranks of `python -m mbtrain.cli.main train ARGS` (or of `script`)."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    cmd = script or [sys.executable, "-m", "mbtrain.cli.main", "train"]
    for rank in range(world):
        with open(log_dir / f"rank{rank}.log", "ab") as out:  # the child keeps its own copy
            procs.append(
                subprocess.Popen(
                    [*cmd, *args],
                    env=rank_env(rank, world, port, extra_env),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=REPO,
                )
            )
    return procs


def wait(
    procs: list[subprocess.Popen], log_dir: Path, timeout: float = 300, ok=(0, 75)
) -> list[int]:
    """Exit codes of all ranks. A rank exiting with a code not in `ok` stops the others after a
    grace period (they would otherwise hang in a collective until the timeout)."""
    deadline = time.monotonic() + timeout
    failed_at = None
    while any(p.poll() is None for p in procs):
        now = time.monotonic()
        if now > deadline:
            _kill(procs)
            raise AssertionError(f"ranks timed out; logs:\n{read_logs(log_dir)}")
        if failed_at is None and any(p.poll() not in (None, *ok) for p in procs):
            failed_at = now
        if failed_at is not None and now - failed_at > 5:
            _kill(procs)
            break
        time.sleep(0.2)
    return [p.returncode for p in procs]


def _kill(procs: list[subprocess.Popen]) -> None:
    for q in procs:
        if q.poll() is None:
            q.kill()
            q.wait()


def read_logs(log_dir: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
        for p in sorted(log_dir.glob("*.log"))
    )


def run(world: int, args: list[str], log_dir: Path, expect: int = 0, **kw) -> None:
    codes = wait(launch(world, args, log_dir, **kw), log_dir, ok=(expect,))
    assert all(c == expect for c in codes), (
        f"exit codes {codes} (expected {expect}):\n{read_logs(log_dir)}"
    )
