"""One rank of `export_from_engine` on gloo, the way the trainer calls it at the end of a run.

Rank 0 writes under a file-size limit of FSIZE_LIMIT bytes when it is set: past it a write
fails with EFBIG (Python ignores SIGXFSZ), as a full disk fails one with ENOSPC. Each rank
prints `OUTCOME <what export_from_engine did>`, then both meet in a barrier, which a rank
that died or hung would never reach.
"""

import os
import resource
import sys
from types import SimpleNamespace

if os.environ.get("RANK") == "0" and os.environ.get("FSIZE_LIMIT"):
    limit = int(os.environ["FSIZE_LIMIT"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

import torch.distributed as dist

from mbtrain.checkpoint.export import export_from_engine
from mbtrain.errors import CheckpointError
from mbtrain.model import ModelConfig, build_model

dist.init_process_group("gloo")
cfg = ModelConfig.tiny()
engine = SimpleNamespace(module=build_model(cfg), global_steps=7)
layout = SimpleNamespace(sharded_weights=False, zero_stage=0)  # rank 0 holds all weights
try:
    export_from_engine(engine, cfg, layout, None, sys.argv[1])
    outcome = "ok"
except CheckpointError as e:
    outcome = f"CheckpointError: {e}"
print(f"OUTCOME {outcome}", flush=True)
dist.barrier()
print("BARRIER passed", flush=True)
dist.destroy_process_group()
