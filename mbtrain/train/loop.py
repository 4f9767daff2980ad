"""The training loop: one code path for 1 CPU process and for many GPU nodes.

Order of start-up, and why:
1. process group (the launcher's environment; the device decides DeepSpeed's accelerator),
2. layout check (fails before any memory is used),
3. seed, then build the model (same seed on every rank: identical initial weights, so a
   TP/ZeRO run starts from exactly the model a single process would build),
4. DeepSpeed engine (ZeRO, precision, clipping, accumulation from the generated config),
5. data loaders (rank mapping from the layout), then resume (weights, optimizer, scheduler,
   data position, RNG), then monitoring (metrics.jsonl truncated to the resumed step, wandb).
DeepSpeed owns gradient accumulation: every micro-batch goes through `engine.backward` and
`engine.step`, and the update happens at the accumulation boundary.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from mbtrain.config import RunConfig, check_layout, config_to_dict, save_config
from mbtrain.errors import CheckpointError, ConfigError, MbtrainError
from mbtrain.parallel.distributed import DistEnv, init_distributed
from mbtrain.train.signals import RequeueExit, StopRequest

LN2 = math.log(2)


@dataclass
class TrainResult:
    step: int
    loss: float | None
    val_bpb: float | None
    run_dir: Path
    checkpoint: Path | None


def peak_memory_bytes(device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


class Trainer:
    """Owns the engine, the loaders and the run directory of one training run."""

    def __init__(self, cfg: RunConfig):
        if cfg.train.keep_host_memory:  # before the first large allocation
            from mbtrain.train.host_memory import keep_freed_memory

            keep_freed_memory()
        self.cfg = cfg
        self.env: DistEnv = init_distributed(cfg.train.device, cfg.parallel.backend)
        self.layout = check_layout(cfg, self.env.world_size)
        self.rank = self.env.rank
        self.run_dir = Path(cfg.run.dir)
        self.stop = StopRequest().install()

    # ---------------------------------------------------------------- setup
    def setup(self) -> None:
        from mbtrain.checkpoint.manager import CheckpointManager
        from mbtrain.train.state import TrainState

        cfg = self.cfg
        self._lock_run_dir()
        if self.rank == 0:
            (self.run_dir / "logs").mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / "config.yaml")
        self._build_engine()
        self._build_loaders()
        self.ckpt = CheckpointManager(
            self.run_dir / "checkpoints",
            cfg.checkpoint.keep,
            self.rank,
            self.env.world_size,
            cfg.checkpoint.allow_pickle,
        )
        self.state = TrainState()
        self._resume()
        self._start_monitoring()

    def _lock_run_dir(self) -> None:
        """Rank 0 takes the run directory's lock before anything is written there; every rank
        learns the outcome (a refused lock stops all of them with the holder named)."""
        from mbtrain.checkpoint.manager import agree, first_problem
        from mbtrain.train.lock import RunDirLock, RunDirLocked

        problem = None
        if self.rank == 0:
            try:
                self.lock = RunDirLock(self.run_dir).acquire()
            except RunDirLocked as e:
                problem = str(e)
        problem = first_problem(agree(problem))
        if problem:
            raise RunDirLocked(problem.removeprefix("rank 0: "))

    def _build_engine(self) -> None:
        import deepspeed

        from mbtrain.checkpoint.shards import name_param_groups
        from mbtrain.model import build_model
        from mbtrain.parallel import apply_parallelism
        from mbtrain.train.ds_config import build_deepspeed_config
        from mbtrain.train.module import LossModule
        from mbtrain.train.optim import build_optimizer, build_scheduler
        from mbtrain.train.rng import seed_everything

        cfg = self.cfg
        seed_everything(cfg.train.seed)
        model = build_model(cfg.model)
        self.model_cfg = cfg.model
        module, self.groups = apply_parallelism(LossModule(model), cfg.parallel, self.layout)
        if cfg.train.compile:
            # Per block, after parallelism rewrote the blocks: one graph serves every block of
            # a stack (same shapes), and the Python loop around them stays as it is.
            for stack in (model.global_model, getattr(model, "local_model", None)):
                for block in stack.blocks if stack is not None else ():
                    block.compile()
        self.pipeline = self.layout.pipeline_enabled
        self.optimizer = build_optimizer(module, cfg.optim)
        if self.pipeline and (self.layout.zero_stage == 0 or cfg.train.precision == "bf16"):
            # ZeRO-1/2 in fp32 skip an update with an invalid gradient norm themselves (the
            # loop applies the policy to that skip); elsewhere nothing checks the gradients.
            self.optimizer.guard = self._pipeline_guard
        # Parameter names saved with the optimizer state: resharding a ZeRO-0 checkpoint
        # matches Adam moments to parameters by name (mbtrain.checkpoint.reshard).
        name_param_groups(self.optimizer, module)
        scheduler = build_scheduler(self.optimizer, cfg.optim, cfg.train.steps)
        self.ds_config = build_deepspeed_config(cfg.train, cfg.optim, self.layout)
        self.engine, _, _, _ = deepspeed.initialize(
            model=module,
            optimizer=self.optimizer,
            lr_scheduler=scheduler,
            config=self.ds_config,
            mpu=self.groups.deepspeed_mpu(),
            dist_init_required=False,
        )
        self.device = self.engine.device
        # Data-parallel coordinates: all ranks of one tensor/pipeline group share a batch.
        self.dp_rank = self.groups.data_rank
        self.dp_size = self.layout.data
        # Different dropout per data-parallel rank would be fine, but identical streams keep
        # runs reproducible across layouts; sharded regions get their own (parallel package).
        seed_everything(cfg.train.seed + 1)

    def _build_loaders(self) -> None:
        from mbtrain.data import build_loader

        cfg = self.cfg
        kw = dict(
            seq_len=cfg.model.seq_len,
            micro_batch_size=cfg.train.micro_batch_size,
            dp_rank=self.dp_rank,
            dp_size=self.dp_size,
            seed=cfg.train.seed,
            # Document masking needs every patch inside one document: lay documents out on
            # patch boundaries (mbtrain.model.documents).
            align=cfg.model.patch_size
            if cfg.model.doc_mask and cfg.model.arch == "megabyte"
            else 1,
        )
        self.train_loader = build_loader(cfg.data, "train", **kw)
        self.val_loader = build_loader(cfg.data, "val", **kw) if cfg.data.val else None
        self._train_iter = None

    def _resume(self) -> None:
        from mbtrain.train.resume import choose_checkpoint
        from mbtrain.train.rng import load_rng_state
        from mbtrain.train.state import TrainState

        found = choose_checkpoint(self.ckpt, self.cfg.checkpoint, self.rank, self.env.world_size)
        if found is None:
            return
        root, tag = found
        client, rank_state = self._load_checkpoint(root, tag)
        self._apply_schedule()
        self.state = TrainState.from_dict(client.get("mbtrain", {}))
        load_rng_state(rank_state["rng"])
        if rank_state.get("loader") is not None:
            self.train_loader.load_state_dict(rank_state["loader"])
        self.resumed_from = root / tag
        if self.rank == 0:
            print(f"[mbtrain] resumed from {root / tag} at step {self.state.step}", flush=True)

    def _apply_schedule(self) -> None:
        """This config's schedule (steps, warmup, decay, peak lr) over the restored step count:
        a resumed run follows what its config says now, e.g. a longer `train.steps`."""
        from mbtrain.train.optim import apply_schedule

        sched = self.engine.lr_scheduler
        if sched is None:
            return
        changed = apply_schedule(sched, self.cfg.optim)
        if changed and self.rank == 0:
            old, new = changed[0]
            print(f"[mbtrain] resume: peak lr {old:g} -> {new:g} (optim.lr)", flush=True)

    def _load_checkpoint(self, root: Path, tag: str) -> tuple[dict, dict]:
        """Load a checkpoint of this layout, or reshard one saved with another layout."""
        from mbtrain.checkpoint.layout import read_marker
        from mbtrain.checkpoint.reshard import load_resharded

        info = read_marker(root / tag)
        if not self.layout.differs_from(info):
            return self.ckpt.load(self.engine, root, tag)
        saved = self.layout.describe_saved(info)
        if not self.cfg.checkpoint.reshard:
            raise CheckpointError(
                f"{root / tag}: saved with another layout ({saved}); set checkpoint.reshard=true "
                "to convert it, or run with the saved layout"
            )
        if self.rank == 0:
            print(f"[mbtrain] resharding {root / tag} (saved with {saved})", flush=True)
        client = load_resharded(
            self.engine,
            root,
            tag,
            info,
            self.cfg.model,
            self.layout,
            self.groups,
            self.cfg.checkpoint,
        )
        # Per-rank files belong to the old ranks. Every rank draws from identically seeded
        # generators and the loader position is global (streaming resumes at another
        # data-parallel size), so rank 0's state continues the run for every new rank.
        return client, self.ckpt.load_rank_state(root / tag, 0)

    def _start_monitoring(self) -> None:
        from mbtrain.model import flops_per_byte
        from mbtrain.monitor.metrics import MetricsWriter
        from mbtrain.monitor.peak import device_peak_flops
        from mbtrain.monitor.wandb_logger import WandbLogger, new_run_id
        from mbtrain.monitor.watchdog import Watchdog

        cfg = self.cfg
        self.flops_per_byte = flops_per_byte(cfg.model, training=True)
        peak = cfg.logging.peak_flops
        if not peak and self.rank == 0:  # only rank 0's value is broadcast
            peak = device_peak_flops(self.env.device, cfg.train.precision)
        peak_t = torch.tensor([peak], dtype=torch.float64, device=self._comm_device())
        dist.broadcast(peak_t, src=0)
        peak = float(peak_t.item())
        if self.env.device == "cpu":
            # One CPU is shared by the processes on a node: its peak is the node's, once.
            peak = peak / self.env.local_world_size
        self.total_peak = peak * self.env.world_size
        self.metrics = self.wandb = None
        if self.rank == 0:
            if not self.state.wandb_id:
                self.state.wandb_id = new_run_id()
            self.metrics = MetricsWriter(self.run_dir / "metrics.jsonl", self.state.step)
            self.wandb = WandbLogger(
                cfg.logging, self.run_dir, cfg.run.name, config_to_dict(cfg), self.state.wandb_id
            )
        self.watchdog = Watchdog(
            self.run_dir / "logs",
            self.rank,
            cfg.train.watchdog_factor,
            cfg.train.watchdog_min_s,
            cfg.train.watchdog_exit_s,
        ).start()

    # ---------------------------------------------------------------- steps
    def _next_batch(self) -> dict[str, torch.Tensor]:
        if self._train_iter is None:
            self._train_iter = iter(self.train_loader)
        try:
            return next(self._train_iter)
        except StopIteration:  # end of an epoch: streaming starts the next one
            self._train_iter = iter(self.train_loader)
            try:
                return next(self._train_iter)
            except StopIteration:
                raise ConfigError(
                    f"data.train: {self.cfg.data.train} yields no full batch of "
                    f"{self.cfg.train.micro_batch_size} sample(s) per data-parallel rank "
                    f"({self.dp_size} ranks); prepare more data or lower train.micro_batch_size"
                ) from None

    def _inputs(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(x, mask, segments) on the device; segments only with document masking."""
        x = batch["x"].to(self.device, non_blocking=True)
        mask = batch["mask"].to(self.device, non_blocking=True)
        segments = batch.get("segment_ids") if self.cfg.model.doc_mask else None
        if segments is not None:
            segments = segments.to(self.device, non_blocking=True)
        return x, mask, segments

    def _comm_device(self) -> torch.device:
        # NCCL reduces only GPU tensors; gloo only CPU ones.
        return self.device if self.env.backend == "nccl" else torch.device("cpu")

    def _all_reduce(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        dist.all_reduce(t)
        return t.cpu().tolist()

    def _grad_norm_before_step(self) -> float | None:
        """Global grad norm where DeepSpeed reports none (ZeRO-0 in fp32)."""
        if self.layout.zero_stage != 0 or self.cfg.train.precision != "fp32":
            return None
        from mbtrain.parallel import grad_norm_sq

        return math.sqrt(grad_norm_sq(self.engine.module, self.groups))

    def _pipeline_batches(self, n: int) -> tuple[list, float]:
        """n micro-batches as `(x, (x, mask))` for the pipeline engine, and their mask count.

        Every stage reads the same batches from its loader (same data-parallel rank), so the
        stages agree; the engine feeds x to the first stage and (x, mask) to the last.
        """
        batches, count = [], 0.0
        for _ in range(n):
            batch = self._next_batch()
            x = batch["x"].to(self.device, non_blocking=True)
            mask = batch["mask"].to(self.device, non_blocking=True)
            count += float(mask.sum().item())
            batches.append((x, (x, mask)))
        return batches, count

    def _pipeline_train_step(self) -> dict[str, Any]:
        """One optimizer step through `train_batch`, which owns the micro-batch schedule.

        The loss reaches the loop only after the update, so the non-finite policy is applied
        inside the update: `_pipeline_guard` checks the gradients (a non-finite loss makes them
        non-finite) and skips or stops before the weights change. DeepSpeed's ZeRO optimizer
        may also skip on its own (invalid gradient norm, fp32): the same policy then applies.
        """
        accum = self.cfg.train.grad_accum
        batches, count = self._pipeline_batches(accum)
        skipped_before = self.engine.skipped_steps
        self._guard_decision = None  # taken by the first step() call of this engine step
        # Mean loss over the micro-batches and the data-parallel replicas, on every stage.
        loss = float(self.engine.train_batch(iter(batches)).float().item())
        guarded = bool(self._guard_decision)
        skipped = guarded or self._deepspeed_skipped(skipped_before, guarded)
        if not skipped and not math.isfinite(loss):
            msg = (
                f"non-finite loss at step {self.state.step + 1} with finite gradients: the "
                "update was applied"
            )
            if self.cfg.train.on_nonfinite == "stop":
                raise MbtrainError(msg + " (train.on_nonfinite=stop)")
            if self.rank == 0:
                print(f"[mbtrain] {msg}", flush=True)
        total_loss, total_count = self._all_reduce([loss * accum, count])
        reported = self.engine.get_global_grad_norm()
        return {
            "loss": total_loss / (accum * self.env.world_size),
            "bytes": total_count / self.layout.ranks_per_sample,
            "grad_norm": None if reported is None or skipped else float(reported),
            "skipped": skipped,
        }

    def _deepspeed_skipped(self, skipped_before: int, ours: bool) -> bool:
        """Whether DeepSpeed skipped this step's update; a skip that mbtrain did not decide
        (finite loss, invalid gradients: ZeRO's or bf16's own check) gets the same policy."""
        skipped = self.engine.skipped_steps > skipped_before
        if skipped and not ours:
            self._on_nonfinite("gradients (DeepSpeed skipped the update)")
        return skipped

    def _pipeline_guard(self, optimizer) -> bool:
        """Called by the optimizer inside `train_batch`, before the update, on every rank.

        Decided once per engine step, at the first call: ZeRO calls `step()` per parameter
        group (showing one group at a time), and every group must follow the same decision.
        A non-finite loss makes every gradient non-finite, so the first group tells.
        """
        if self._guard_decision is not None:
            return self._guard_decision
        flags = [
            torch.isfinite(p.grad).all()
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        local_bad = 0.0 if not flags or bool(torch.stack(flags).all()) else 1.0
        bad = self._all_reduce([local_bad])[0] > 0  # every stage must take the same decision
        self._guard_decision = bad
        if bad:
            self._on_nonfinite("gradients")  # raises under `stop`: the weights stay as they are
        return bad

    def _pipeline_eval_loss(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """This replica's loss on one micro-batch, from the last stage to every stage.

        Not eval_batch's own broadcast: that averages over data-parallel replicas first,
        and evaluate weights each replica's loss by its own mask count.
        """
        engine = self.engine
        out = engine.eval_batch(
            iter([(x, (x, mask))]), reduce_output=None, bcast_loss=False, num_micro_batches=1
        )
        loss = torch.zeros(1, dtype=torch.float32, device=self.device)
        if engine.is_last_stage():
            loss.copy_(out[0].detach().float().reshape(1))
        src = engine.grid.stage_to_global(engine.num_stages - 1)
        dist.broadcast(loss, src=src, group=engine.grid.get_pipe_parallel_group())
        return loss[0]

    def train_step(self) -> dict[str, Any]:
        if self.pipeline:
            return self._pipeline_train_step()
        engine, accum = self.engine, self.cfg.train.grad_accum
        loss_sum = count = nonfinite = 0.0
        grad_norm = None
        skipped_before = engine.skipped_steps  # moves only at the accumulation boundary
        for micro in range(accum):
            batch = self._next_batch()
            x, mask, segments = self._inputs(batch)
            loss = engine(x, mask, segments)
            value = float(loss.detach().float().item())
            nonfinite += 0.0 if math.isfinite(value) else 1.0
            loss_sum += value if math.isfinite(value) else 0.0
            count += float(mask.sum().item())
            engine.backward(loss)
            if micro == accum - 1:
                # Every rank must agree before the update: one rank's NaN poisons all.
                bad = self._all_reduce([nonfinite])[0]
                if bad:
                    self._on_nonfinite("loss")
                    self.optimizer.skip_next_step = True
                else:
                    grad_norm = self._grad_norm_before_step()
            engine.step()
        # The skip holds for every parameter group of this step (ZeRO calls our step() per
        # group) and must not outlive it: ZeRO may also skip by itself (invalid gradient
        # norm) without calling ours, and a left-over flag would drop the next, good update.
        self.optimizer.skip_next_step = False
        total_loss, total_count, total_bad = self._all_reduce([loss_sum, count, nonfinite])
        ds_skipped = self._deepspeed_skipped(skipped_before, bool(total_bad))
        reported = engine.get_global_grad_norm()
        if reported is not None:
            grad_norm = float(reported)
        finite_micro = accum * self.env.world_size - total_bad
        loss_mean = total_loss / finite_micro if finite_micro else float("nan")
        return {
            "loss": loss_mean,
            "bytes": total_count / self.layout.ranks_per_sample,
            "grad_norm": grad_norm,
            "skipped": bool(total_bad) or ds_skipped,
        }

    def _on_nonfinite(self, what: str) -> None:
        """Count a non-finite step; raise under the `stop` policy or past the skip budget."""
        step = self.state.step + 1
        self.state.nonfinite_skips += 1
        if self.cfg.train.on_nonfinite == "stop" or (
            self.state.nonfinite_skips > self.cfg.train.max_nonfinite_skips
        ):
            latest = self.ckpt.latest()
            where = f"; the last complete checkpoint is {latest}" if latest else ""
            raise MbtrainError(
                f"non-finite {what} at step {step}: stopping before the update reaches the "
                f"weights{where} (train.on_nonfinite={self.cfg.train.on_nonfinite})"
            )
        if self.rank == 0:
            print(f"[mbtrain] step {step}: non-finite {what}, update skipped", flush=True)

    # ---------------------------------------------------------------- eval
    @torch.no_grad()
    def evaluate(self) -> dict[str, Any] | None:
        if self.val_loader is None:
            return None
        self.engine.eval()
        nats = count = 0.0
        it = iter(self.val_loader)
        for _ in range(self.cfg.train.eval_batches):
            try:
                batch = next(it)
            except StopIteration:
                break
            x, mask, segments = self._inputs(batch)
            n = float(mask.sum().item())
            if self.pipeline:
                loss = self._pipeline_eval_loss(x, mask)
            else:
                loss = self.engine(x, mask, segments)
            nats += float(loss.float().item()) * n
            count += n
        del it
        nats, count = self._all_reduce([nats, count])
        self.engine.train()
        if not count:
            return None
        val_loss = nats / count
        return {"val_loss": val_loss, "val_bpb": val_loss / LN2}

    def sample(self) -> str | None:
        """A generated sample for the log (all ranks run it in lockstep; rank 0 keeps it)."""
        n = self.cfg.train.sample_bytes
        if not n or self.layout.pipeline_enabled:
            return None
        from contextlib import nullcontext

        from mbtrain.model import generate

        model = self.engine.module.model
        ctx = nullcontext()
        if self.layout.zero_stage == 3:
            import deepspeed

            ctx = deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
        self.engine.eval()
        prompt = self.cfg.train.sample_prompt.encode()
        with ctx, torch.no_grad():
            out = bytes(
                generate(
                    model, prompt, max_bytes=n, temperature=0.8, top_k=40, seed=self.cfg.train.seed
                )
            )
        self.engine.train()
        return (prompt + out).decode("utf-8", errors="replace")

    # ---------------------------------------------------------------- checkpoints
    def save_checkpoint(self, reason: str) -> Path:
        from mbtrain.train.rng import rng_state

        if hasattr(self, "watchdog"):
            self.watchdog.pause()  # a save gets the watchdog's full limit of its own
        loader_state = (
            self.train_loader.state_dict() if hasattr(self.train_loader, "state_dict") else None
        )
        from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_INFO

        from mbtrain.checkpoint.shards import universal_checkpoint_info

        client = {
            "mbtrain": self.state.to_dict(),
            "config": config_to_dict(self.cfg),
            # Lets DeepSpeed's own ds_to_universal convert this checkpoint too.
            UNIVERSAL_CHECKPOINT_INFO: universal_checkpoint_info(self.engine.module),
        }
        rank_state = {"rng": rng_state(), "loader": loader_state}
        info = {
            "reason": reason,
            **self.layout.marker(),
            "model": dataclasses.asdict(self.cfg.model),
        }
        path = self.ckpt.save(self.engine, self.state.step, client, rank_state, info)
        self.last_saved_step = self.state.step
        if self.rank == 0:
            print(f"[mbtrain] checkpoint ({reason}) step {self.state.step}: {path}", flush=True)
        return path

    def _stop_requested(self) -> bool:
        return bool(self._all_reduce([1.0 if self.stop.requested else 0.0])[0])

    # ---------------------------------------------------------------- loop
    def run(self) -> TrainResult:
        from mbtrain.monitor.console import format_train_line

        cfg, tr = self.cfg, self.cfg.train
        self.last_saved_step = self.state.step if getattr(self, "resumed_from", None) else -1
        last_loss = val_bpb = None
        t_start = time.perf_counter()
        elapsed_before = self.state.elapsed_s
        window_time, window_bytes = 0.0, 0.0
        step_times: deque[float] = deque(maxlen=20)  # recent steps, for the ETA
        if self.rank == 0 and self.state.step < tr.steps:
            print(
                f"[mbtrain] training {cfg.model.arch} for {tr.steps} steps on {self.env.world_size} "
                f"{self.env.device} process(es) ({self.layout.describe()}), run dir {self.run_dir}",
                flush=True,
            )
        bar = None
        if self.rank == 0 and cfg.logging.progress_bar and self.state.step < tr.steps:
            from tqdm import tqdm

            bar = tqdm(total=tr.steps, initial=self.state.step, unit="step", dynamic_ncols=True)
        say = bar.write if bar is not None else functools.partial(print, flush=True)
        while self.state.step < tr.steps:
            t0 = time.perf_counter()
            out = self.train_step()
            self.state.step += 1
            step = self.state.step
            self.watchdog.beat(step)
            if bar is not None:
                bar.update(1)
            # A skipped step is not logged or counted, but evaluation, checkpoints and stop
            # requests still happen: a preempted run must not die without its checkpoint.
            if not out["skipped"]:
                self.state.nonfinite_skips = 0
                self.state.bytes_seen += int(out["bytes"])
                last_loss = out["loss"]
                step_times.append(time.perf_counter() - t0)
                # Throughput counts training steps only, not evaluation or checkpoint time.
                window_time += step_times[-1]
                window_bytes += out["bytes"]
                if step % tr.log_every == 0 or step == tr.steps:
                    now = time.perf_counter()
                    bps = window_bytes / max(window_time, 1e-9)
                    row = {
                        "step": step,
                        "loss": out["loss"],
                        "bpb": out["loss"] / LN2,
                        "lr": float(self.engine.get_lr()[0]),
                        "grad_norm": out["grad_norm"],
                        "bytes_per_s": bps,
                        "bytes_seen": self.state.bytes_seen,
                        "mfu": (bps * self.flops_per_byte / self.total_peak)
                        if self.total_peak
                        else None,
                        "mem_bytes": peak_memory_bytes(self.env.device),
                        "elapsed_s": elapsed_before + now - t_start,
                        "eta_s": (tr.steps - step) * sum(step_times) / len(step_times),
                    }
                    if self.rank == 0:
                        self.metrics.write(row)
                        self.wandb.log(row, step)
                        say(format_train_line(row, tr.steps))
                    window_time, window_bytes = 0.0, 0.0
            if tr.eval_every and step % tr.eval_every == 0 and step < tr.steps:
                val_bpb = self._eval_and_log(step)
            self.state.elapsed_s = elapsed_before + time.perf_counter() - t_start
            if cfg.checkpoint.every and step % cfg.checkpoint.every == 0 and step < tr.steps:
                self.save_checkpoint("every")
                self.watchdog.pause()
            # A stop during the last step needs no requeue: the run ends here anyway.
            if step < tr.steps and self._stop_requested():
                if self.last_saved_step != step:
                    self.save_checkpoint(f"signal {self.stop.signum}")
                raise RequeueExit()
        if bar is not None:
            bar.close()
        self.state.elapsed_s = elapsed_before + time.perf_counter() - t_start
        val_bpb = self._eval_and_log(self.state.step)
        ckpt = None
        if self.last_saved_step != self.state.step:
            ckpt = self.save_checkpoint("end")
        else:
            ckpt = self.ckpt.root / self.ckpt.latest() if self.ckpt.latest() else None
        self.export()
        return TrainResult(self.state.step, last_loss, val_bpb, self.run_dir, ckpt)

    def _eval_and_log(self, step: int) -> float | None:
        self.watchdog.pause()  # evaluation gets the watchdog's full limit of its own
        row = self.evaluate()
        text = self.sample()
        self.watchdog.pause()
        if row is None:
            return None
        if self.rank == 0:
            self.metrics.write({"step": step, **row})
            self.wandb.log(row, step)
            print(f"[mbtrain] step {step}: val_bpb {row['val_bpb']:.4f}", flush=True)
            if text is not None:
                self.wandb.log_sample(text, step)
        return row["val_bpb"]

    def export(self) -> Path | None:
        from mbtrain.checkpoint.export import export_from_engine

        return export_from_engine(
            self.engine,
            self.cfg.model,
            self.layout,
            self.groups,
            self.run_dir / "export",
            self.state.step,
        )

    def close(self) -> None:
        if hasattr(self, "watchdog"):
            self.watchdog.stop()
        if self.rank == 0:
            if getattr(self, "metrics", None):
                self.metrics.close()
            if getattr(self, "wandb", None):
                self.wandb.finish()
        if getattr(self, "lock", None) is not None:
            self.lock.release()


def train(cfg: RunConfig) -> TrainResult:
    """Train (or resume) the run described by `cfg`; all ranks call this."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    trainer = Trainer(cfg)
    try:
        trainer.setup()
        return trainer.run()
    finally:
        trainer.close()
