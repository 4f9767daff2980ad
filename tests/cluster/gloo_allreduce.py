"""Run by every srun task in the cluster tests: torch.distributed (gloo, env://) from the
variables that `mbtrain.cluster.env` mapped, one all_reduce, results to OUT_DIR/rank<r>.json.

Usage: python gloo_allreduce.py OUT_DIR
"""

import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from mbtrain.cluster.env import TORCH_VARS

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
dist.init_process_group("gloo", init_method="env://", timeout=timedelta(seconds=60))
rank, world = dist.get_rank(), dist.get_world_size()
t = torch.tensor([float(rank + 1)])
dist.all_reduce(t)
names = [None] * world
dist.all_gather_object(names, os.environ.get("SLURM_NODEID", "?"))
keys = (*TORCH_VARS, "SLURM_JOB_ID")
(out / f"rank{rank}.json").write_text(
    json.dumps(
        {
            "sum": t.item(),
            "world": world,
            "node_ids": names,
            "env": {k: os.environ.get(k) for k in keys},
            "torch_threads": torch.get_num_threads(),
        }
    )
)
dist.destroy_process_group()
