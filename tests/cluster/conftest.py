"""Fixtures for the cluster tests: the local Slurm cluster and job-waiting helpers.

The `slurm_cluster` fixture starts cluster/slurm_up.sh once per session and leaves it up
(CI starts it too; starting is idempotent). Where it cannot start (not root and Slurm not
installed) the Slurm tests are skipped with the reason, unless MBTRAIN_REQUIRE_SLURM=1
asks for a failure instead.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from mbtrain.cluster.status import slurm_job

REPO = Path(__file__).resolve().parents[2]
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}


@pytest.fixture(scope="session")
def slurm_cluster() -> str:
    """Start (or reuse) the local cluster; return SLURM_CONF, also set in os.environ."""
    try:
        proc = subprocess.run(
            ["bash", str(REPO / "cluster" / "slurm_up.sh")],
            capture_output=True,
            text=True,
            timeout=300,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        proc, err = None, str(e)
    else:
        err = proc.stderr.strip()[-2000:]
    if proc is None or proc.returncode != 0:
        reason = f"local Slurm cluster did not start: {err}"
        if os.environ.get("MBTRAIN_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    conf = next(
        line.split("=", 1)[1]
        for line in proc.stdout.splitlines()
        if line.startswith("export SLURM_CONF=")
    )
    os.environ["SLURM_CONF"] = conf
    return conf


def _wait_job(
    job_id: str,
    until=lambda rec: rec.get("JobState") in TERMINAL,
    timeout: float = 120.0,
    poll: float = 0.5,
) -> dict:
    """Poll `scontrol show job` until `until(record)`; fail with the record on timeout."""
    deadline = time.monotonic() + timeout
    rec: dict = {}
    while time.monotonic() < deadline:
        rec = slurm_job(job_id) or {}
        if rec and until(rec):
            return rec
        time.sleep(poll)
    pytest.fail(f"job {job_id} not in the expected state after {timeout:.0f}s: {rec}")


def _job_output(run_dir: Path) -> str:
    """All Slurm output and error files of a run, for assertion messages."""
    parts = []
    for f in sorted((run_dir / "slurm").glob("*.out")) + sorted((run_dir / "slurm").glob("*.err")):
        parts.append(f"--- {f.name}\n{f.read_text(errors='replace')}")
    return "\n".join(parts)


@pytest.fixture
def wait_job():
    """`wait_job(job_id, until=pred, timeout=s) -> record`: poll Slurm until pred(record)."""
    return _wait_job


@pytest.fixture
def job_output():
    """`job_output(run_dir) -> str`: the run's Slurm output files, for failure messages."""
    return _job_output
