"""Setting a run up, in the order that keeps a refused start harmless.

1. the process group (the launcher's environment; the device decides DeepSpeed's
   accelerator) and the scheduler's stop signals;
2. the run directory's lock (rank 0; every rank learns the outcome), so no other trainer
   changes the directory while this one checks it;
3. every check (`preflight.py`): layout, data, the checkpoint to resume and whether this
   config can continue from it. Nothing is written before they all pass;
4. the run directory: what the resume plan sets aside is renamed, config.yaml is written;
5. the engine (`engine.py`), the loaders, the checkpointer; the checkpoint is loaded;
6. monitoring: the watchdog, metrics.jsonl (truncated to the resumed step) and wandb.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mbtrain.checkpoint.manager import CheckpointManager, agree, first_problem
from mbtrain.data import build_loader
from mbtrain.model import flops_per_byte
from mbtrain.monitor.peak import device_peak_flops
from mbtrain.monitor.train_log import TrainLog
from mbtrain.monitor.wandb_logger import new_run_id
from mbtrain.monitor.watchdog import Watchdog
from mbtrain.parallel import ParallelLayout
from mbtrain.parallel.distributed import DistEnv, init_distributed
from mbtrain.train.checkpointer import Checkpointer
from mbtrain.train.engine import TrainEngine, build_engine
from mbtrain.train.evaluation import Evaluator
from mbtrain.train.host_memory import keep_freed_memory
from mbtrain.train.lock import RunDirLock, RunDirLocked
from mbtrain.train.nonfinite import NonFinitePolicy
from mbtrain.train.preflight import Preflight, checkpoints_root, preflight
from mbtrain.train.resume import load_resume
from mbtrain.train.run_config import RunConfig, config_to_dict, save_config
from mbtrain.train.signals import StopRequest
from mbtrain.train.state import TrainState
from mbtrain.train.windows import TrainStream

log = logging.getLogger(__name__)


@dataclass
class Run:
    """Everything the training loop drives."""

    cfg: RunConfig
    env: DistEnv
    layout: ParallelLayout
    run_dir: Path
    state: TrainState
    stop: StopRequest
    lock: RunDirLock | None
    te: TrainEngine
    policy: NonFinitePolicy
    train_loader: TrainStream
    evaluator: Evaluator
    checkpointer: Checkpointer
    log: TrainLog
    watchdog: Watchdog
    resumed: bool


def lock_run_dir(run_dir: Path, rank: int) -> RunDirLock | None:
    """Rank 0 takes the run directory's lock; a refusal stops every rank, the holder named."""
    lock, problem = None, None
    if rank == 0:
        try:
            lock = RunDirLock(run_dir).acquire()
        except RunDirLocked as e:
            problem = str(e)
    problem = first_problem(agree(problem))
    if problem:
        raise RunDirLocked(problem.removeprefix("rank 0: "))
    return lock


def publish_run_dir(cfg: RunConfig, pre: Preflight, rank: int) -> None:
    """The first writes, once every check passed: set aside what the plan decided, then
    logs/ and the resolved config.yaml (rank 0)."""
    if pre.resume is not None:
        pre.resume.apply(rank, log.info)
    if rank == 0:
        run_dir = Path(cfg.run.dir)
        (run_dir / "logs").mkdir(parents=True, exist_ok=True)
        save_config(cfg, run_dir / "config.yaml")


def build_loaders(cfg: RunConfig, te: TrainEngine, step: int) -> tuple[TrainStream, Any]:
    """(train stream, val loader) of this rank's data-parallel replica (val None without
    data.val). The train stream starts at the window of `step` (`train.seq_len_schedule`);
    validation always reads windows of model.seq_len, so its numbers compare along the run."""

    def loader(split: str, seq_len: int, drop_last: bool = True) -> Any:
        return build_loader(
            cfg.data,
            split,
            seq_len=seq_len,
            micro_batch_size=cfg.train.micro_batch_size,
            dp_rank=te.dp_rank,
            dp_size=te.layout.data,
            seed=cfg.train.seed,
            drop_last=drop_last,
            # Document masking needs every patch inside one document: lay documents out on
            # patch boundaries (mbtrain.model.documents).
            align=cfg.model.patch_size
            if cfg.model.doc_mask and cfg.model.arch == "megabyte"
            else 1,
        )

    train = TrainStream(lambda window: loader("train", window), cfg.train, cfg.model.seq_len, step)
    # A validation split smaller than one micro-batch still evaluates (a short last batch); a
    # pipeline's stages pass fixed shapes, so it keeps full batches only.
    val = loader("val", cfg.model.seq_len, drop_last=te.pipeline) if cfg.data.val else None
    return train, val


def total_peak_flops(cfg: RunConfig, te: TrainEngine) -> float:
    """Peak FLOP/s of the whole run, for MFU: rank 0's device peak (configured, looked up or
    measured) times the world; on CPU the node's one peak is shared by its processes."""
    peak = cfg.logging.peak_flops
    if not peak and te.env.rank == 0:  # only rank 0's value is broadcast
        peak = device_peak_flops(te.env.device, cfg.train.precision)
    peak = te.broadcast(peak)
    if te.env.device == "cpu":
        peak /= te.env.local_world_size
    return peak * te.env.world_size


def setup_run(cfg: RunConfig) -> Run:
    """All ranks call it; see the module docstring for the order."""
    if cfg.train.keep_host_memory:  # before the first large allocation
        keep_freed_memory()
    env = init_distributed(cfg.train.device, cfg.parallel.backend)
    stop = StopRequest().install()
    run_dir = Path(cfg.run.dir)
    lock = lock_run_dir(run_dir, env.rank)
    try:
        pre = preflight(cfg, env.world_size, env.rank)
        publish_run_dir(cfg, pre, env.rank)
        return _build(cfg, env, pre, run_dir, stop, lock)
    except BaseException:
        if lock is not None:
            lock.release()
        raise


def _build(cfg, env, pre: Preflight, run_dir, stop, lock) -> Run:
    state = TrainState()
    manager = CheckpointManager(
        checkpoints_root(cfg),
        cfg.checkpoint.keep,
        env.rank,
        env.world_size,
        cfg.checkpoint.allow_pickle,
    )
    checkpointer: Checkpointer | None = None
    policy = NonFinitePolicy(
        cfg.train,
        state,
        all_reduce=lambda values: te.all_reduce(values),
        latest=lambda: checkpointer.latest() if checkpointer else None,
        say=log.info,
    )
    te = build_engine(
        cfg.model, cfg.parallel, cfg.train, cfg.optim, pre.layout, env, policy.should_skip
    )
    # ZeRO-1/2 in fp32 skip an update with invalid gradients themselves (the policy applies
    # to that skip); elsewhere nothing checks a pipeline's gradients but the policy.
    policy.check_gradients = pre.layout.pipeline_enabled and (
        pre.layout.zero_stage == 0 or cfg.train.precision == "bf16"
    )
    resume_step = int(pre.resume.info.get("step", 0)) if pre.resume is not None else 0
    train_loader, val_loader = build_loaders(cfg, te, resume_step)
    watchdog = Watchdog(
        run_dir / "logs",
        env.rank,
        cfg.train.watchdog_factor,
        cfg.train.watchdog_min_s,
        cfg.train.watchdog_exit_s,
    )
    checkpointer = Checkpointer(
        te, manager, cfg.checkpoint.every, state, train_loader, config_to_dict(cfg),
        pre.data_identity, log.info, watchdog,
    )  # fmt: skip
    if pre.resume is not None:
        load_resume(
            pre.resume, te, manager, cfg.checkpoint, cfg.optim, state, train_loader,
            pre.restart_data, log.info,
        )  # fmt: skip
        checkpointer.last_saved_step = state.step
    if env.rank == 0 and not state.wandb_id:  # only rank 0 talks to wandb
        state.wandb_id = new_run_id()
    train_log = TrainLog(
        env.rank, run_dir, cfg.logging, cfg.run.name, config_to_dict(cfg), state.step,
        state.wandb_id, cfg.train.steps, cfg.train.log_every,
        flops_per_byte(cfg.model, training=True), total_peak_flops(cfg, te), env.device,
        sample_prompt=cfg.train.sample_prompt,
    )  # fmt: skip
    evaluator = Evaluator(te, cfg.train, val_loader, cfg.model.doc_mask, watchdog)
    watchdog.start()
    return Run(
        cfg, env, pre.layout, run_dir, state, stop, lock, te, policy, train_loader, evaluator,
        checkpointer, train_log, watchdog, resumed=pre.resume is not None,
    )  # fmt: skip
