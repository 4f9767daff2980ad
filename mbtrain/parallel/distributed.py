"""Process-group start-up: the one place that turns a launcher's environment into torch.distributed.

Launchers: a plain `python` (one process: we fill in a single-rank environment) and `torchrun`
(RANK, WORLD_SIZE, LOCAL_RANK, ... already set); Slurm's `srun` sets SLURM_* variables, which
the CLI maps first (`mbtrain.cluster.env.apply_slurm_env`): this module knows no scheduler.
The device decides the accelerator DeepSpeed uses; this must happen before DeepSpeed is
imported, because DeepSpeed picks its accelerator at import time.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    device: str  # "cpu" or "cuda"
    backend: str  # "gloo" or "nccl"


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        from mbtrain.errors import ConfigError

        raise ConfigError(
            "train.device: cuda requested but no CUDA GPU is visible; use train.device=cpu"
        )
    return device


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill_launcher_env(environ: os._Environ | dict = os.environ) -> None:
    """Make RANK/WORLD_SIZE/... present: a plain `python` run becomes a one-rank world.

    Launchers that set other variables (Slurm's srun: SLURM_PROCID, ...) are translated by
    their caller first (`mbtrain.cluster.env.apply_slurm_env`, run by the CLI)."""
    if "RANK" not in environ:
        environ.update(
            RANK="0",
            WORLD_SIZE="1",
            LOCAL_RANK="0",
            LOCAL_WORLD_SIZE="1",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(_free_port()),
        )
    environ.setdefault("LOCAL_RANK", environ.get("RANK", "0"))
    environ.setdefault("LOCAL_WORLD_SIZE", environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str, backend: str = "auto") -> DistEnv:
    """Start the default process group through DeepSpeed (idempotent)."""
    fill_launcher_env()
    device = resolve_device(device)
    if device == "cpu":
        # DeepSpeed picks its accelerator when first imported.
        os.environ["DS_ACCELERATOR"] = "cpu"
    if backend == "auto":
        backend = "nccl" if device == "cuda" else "gloo"
    local_rank = int(os.environ["LOCAL_RANK"])
    if device == "cuda":
        torch.cuda.set_device(local_rank)
    import deepspeed

    if not torch.distributed.is_initialized():
        # DeepSpeed prints "... built successfully" per rank when it loads its CPU
        # communication op; kept off the console unless debug lines are on (--verbose).
        quiet = not log.isEnabledFor(logging.DEBUG)
        with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
            deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False)
    return DistEnv(
        rank=int(os.environ["RANK"]),
        world_size=int(os.environ["WORLD_SIZE"]),
        local_rank=local_rank,
        local_world_size=int(os.environ["LOCAL_WORLD_SIZE"]),
        device=device,
        backend=backend,
    )
