"""The multi-node path without a multi-node cluster: 2 "nodes" x 2 tasks on this machine.

Each process gets the variables srun would give it on node 0 or 1 of a 2-node step
(SLURM_NODEID, SLURM_STEP_NODELIST, SLURM_STEP_TASKS_PER_NODE, ...), goes through
`python -m mbtrain.cluster.env` as in the batch script, and rendezvouses over gloo. Both
"nodes" resolve to this host (127.0.0.[1-2]; rank 0's node is 127.0.0.1).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GLOO = Path(__file__).with_name("gloo_allreduce.py")


@pytest.mark.dist
def test_two_nodes_two_tasks_rendezvous(tmp_path):
    nodes, tpn = 2, 2
    job_id = str(random.randrange(1, 10**6))
    procs = []
    for node in range(nodes):
        for local in range(tpn):
            env = {
                k: v
                for k, v in os.environ.items()
                if not k.startswith("SLURM_")
                and k not in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
            }
            env.update(
                {
                    "PYTHONPATH": str(REPO),
                    "SLURM_JOB_ID": job_id,
                    "SLURM_PROCID": str(node * tpn + local),
                    "SLURM_LOCALID": str(local),
                    "SLURM_NODEID": str(node),
                    "SLURM_NTASKS": str(nodes * tpn),
                    "SLURM_STEP_NUM_TASKS": str(nodes * tpn),
                    "SLURM_STEP_TASKS_PER_NODE": f"{tpn}(x{nodes})",
                    "SLURM_STEP_NODELIST": "127.0.0.[1-2]",
                    "SLURM_JOB_NODELIST": "127.0.0.[1-2]",
                    "SLURM_CPUS_PER_TASK": "1",
                }
            )
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "mbtrain.cluster.env",
                        "--",
                        sys.executable,
                        str(GLOO),
                        str(tmp_path),
                    ],
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    text=True,
                )
            )
    outs = [p.communicate(timeout=180)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    for rank in range(nodes * tpn):
        res = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert res["sum"] == sum(range(1, nodes * tpn + 1))
        assert res["node_ids"] == ["0", "0", "1", "1"]
        assert res["env"]["LOCAL_RANK"] == str(rank % tpn)
        assert res["env"]["LOCAL_WORLD_SIZE"] == str(tpn)
        assert res["env"]["MASTER_ADDR"] == "127.0.0.1"
