"""When and what the training loop saves: `maybe_save(step)`, and saves on a stop or at the end.

A checkpoint holds everything needed to continue exactly (DeepSpeed's weights, optimizer and
scheduler; the step and counters; every rank's RNG and loader position; the resolved config)
and a marker that lets a later run decide, before building anything, whether it can continue
from it: the layout, the model config and the data identity, `dataset` (`resume.check_resumable`).

Non-finite weights are never published: a save first checks every rank's weights (each its
own partition under ZeRO-3) and refuses, naming the last complete checkpoint, so `latest` can
never point at a diverged model.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_INFO

from mbtrain.checkpoint.manager import CheckpointManager
from mbtrain.checkpoint.shards import universal_checkpoint_info
from mbtrain.errors import CheckpointError
from mbtrain.monitor.watchdog import Watchdog
from mbtrain.train.engine import TrainEngine
from mbtrain.train.rng import rng_state
from mbtrain.train.state import TrainState


def weights_finite(te: TrainEngine) -> bool:
    """Whether every rank's weights are finite (ZeRO-3: each rank's partitions)."""
    local = True
    with torch.no_grad():
        for p in te.engine.module.parameters():
            t = p.ds_tensor if hasattr(p, "ds_tensor") else p
            if t.numel() and not bool(torch.isfinite(t).all()):
                local = False
                break
    return te.all_reduce_max([0.0 if local else 1.0])[0] == 0.0


class Checkpointer:
    def __init__(
        self,
        te: TrainEngine,
        manager: CheckpointManager,
        every: int,
        state: TrainState,
        train_loader: Any,
        run_config: dict,
        data_identity: dict,
        say: Callable[[str], None],
        watchdog: Watchdog | None = None,
    ) -> None:
        self.te, self.manager, self.every, self.state = te, manager, every, state
        self.train_loader, self.run_config, self.data_identity = (
            train_loader,
            run_config,
            data_identity,
        )
        self.say, self.watchdog = say, watchdog
        self.last_saved_step = -1

    def latest(self) -> str | None:
        """The last complete checkpoint, as a path (for messages)."""
        tag = self.manager.latest()
        return str(self.manager.root / tag) if tag else None

    def maybe_save(self, step: int, total: int) -> Path | None:
        """Save at every `checkpoint.every` steps (the last step saves at the end)."""
        if self.every and step % self.every == 0 and step < total:
            return self.save("every")
        return None

    def save_unless_saved(self, reason: str) -> Path | None:
        """Save the current step unless its checkpoint exists already; the latest's path."""
        if self.last_saved_step != self.state.step:
            return self.save(reason)
        latest = self.latest()
        return Path(latest) if latest else None

    def save(self, reason: str) -> Path:
        if self.watchdog is not None:
            self.watchdog.pause()  # a save gets the watchdog's full limit of its own
        te, step = self.te, self.state.step
        if not weights_finite(te):
            latest = self.latest()
            kept = f"; the last complete checkpoint is {latest}" if latest else ""
            raise CheckpointError(
                f"checkpoint of step {step} not written: the weights are not finite (the "
                f"training diverged){kept}"
            )
        loader = self.train_loader
        client = {
            "mbtrain": self.state.to_dict(),
            "config": self.run_config,
            # Lets DeepSpeed's own ds_to_universal convert this checkpoint too.
            UNIVERSAL_CHECKPOINT_INFO: universal_checkpoint_info(te.engine.module),
        }
        rank_state = {
            "rng": rng_state(),
            "loader": loader.state_dict() if hasattr(loader, "state_dict") else None,
        }
        info = {
            "reason": reason,
            **te.layout.marker(),
            "model": dataclasses.asdict(te.model_cfg),
            "dataset": self.data_identity,
        }
        path = self.manager.save(te.engine, step, client, rank_state, info)
        self.last_saved_step = step
        if self.watchdog is not None:
            self.watchdog.pause()
        self.say(f"checkpoint ({reason}) step {step}: {path}")
        return path
