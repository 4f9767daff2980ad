"""The non-finite policy, in one place: what a NaN/inf loss or gradient does to a step.

`train.on_nonfinite`:
* `skip`: the update is not applied (weights, Adam moments untouched), the step is counted
  but not logged; more than `train.max_nonfinite_skips` in a row stop the run;
* `stop`: the run stops before the update reaches the weights, naming the last complete
  checkpoint to resume from.

Who sees what: the step function sees each micro-batch's loss and agrees with every rank
before the update (one rank's NaN poisons all); DeepSpeed sees the gradients (ZeRO and bf16
skip an update with an invalid gradient norm by themselves). The optimizer asks
`should_skip` at every update, the one place a decision reaches it: the decision the step
took for this update, or, inside a pipeline's `train_batch` (which runs forward, backward and
update in one call, so the loop cannot decide in between), a check of the gradients that
every stage agrees on. A skip DeepSpeed decided by itself gets the same policy afterwards.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mbtrain.errors import MbtrainError
from mbtrain.train.config import TrainConfig
from mbtrain.train.state import TrainState


class NonFiniteStop(MbtrainError):
    """The run stops on a non-finite loss or gradient (policy `stop`, or too many skips)."""


class NonFinitePolicy:
    """Decides, counts and stops; `state.nonfinite_skips` is the count a checkpoint keeps."""

    def __init__(
        self,
        cfg: TrainConfig,
        state: TrainState,
        all_reduce: Callable[[list[float]], list[float]],
        latest: Callable[[], str | None],
        say: Callable[[str], None],
    ) -> None:
        self.cfg, self.state = cfg, state
        self.all_reduce, self.latest, self.say = all_reduce, latest, say
        self._decision: bool | None = None  # this update's, once taken
        self.check_gradients = False  # pipelines: decide from the gradients in `should_skip`

    # -- one update ------------------------------------------------------------------------
    def begin_update(self) -> None:
        """Called before every update: nothing is decided yet."""
        self._decision = None

    def decide_from_loss(self, nonfinite_micro_batches: float) -> bool:
        """After the last backward of a step, with the count agreed by every rank: True when
        the update must be skipped (raises under `stop`)."""
        self._decision = bool(nonfinite_micro_batches)
        if self._decision:
            self.on_nonfinite("loss")
        return self._decision

    def should_skip(self, optimizer: torch.optim.Optimizer) -> bool:
        """Asked by the optimizer at every `step()` call (ZeRO calls it per parameter group:
        every group follows the first call's decision)."""
        if self._decision is None and self.check_gradients:
            self._decision = self._gradients_bad(optimizer)
            if self._decision:
                self.on_nonfinite("gradients")  # raises under `stop`: weights stay as they are
        return bool(self._decision)

    def end_update(self, deepspeed_skipped: bool) -> bool:
        """After the update: whether it was skipped, by this policy or by DeepSpeed (whose own
        skips, on invalid gradients, get the same policy)."""
        ours = bool(self._decision)
        if deepspeed_skipped and not ours:
            self.on_nonfinite("gradients (DeepSpeed skipped the update)")
        self._decision = None
        skipped = ours or deepspeed_skipped
        if not skipped:
            self.state.nonfinite_skips = 0
        return skipped

    def _gradients_bad(self, optimizer: torch.optim.Optimizer) -> bool:
        # A non-finite loss makes every gradient non-finite, so the first group tells; every
        # stage must take the same decision.
        flags = [
            torch.isfinite(p.grad).all()
            for group in optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]
        local_bad = 0.0 if not flags or bool(torch.stack(flags).all()) else 1.0
        return self.all_reduce([local_bad])[0] > 0

    # -- counting and stopping ---------------------------------------------------------------
    def on_nonfinite(self, what: str) -> None:
        """Count a non-finite step; raise under `stop` or past the skip budget."""
        step = self.state.step + 1
        self.state.nonfinite_skips += 1
        if self.cfg.on_nonfinite == "stop" or (
            self.state.nonfinite_skips > self.cfg.max_nonfinite_skips
        ):
            latest = self.latest()
            where = f"; the last complete checkpoint is {latest}" if latest else ""
            raise NonFiniteStop(
                f"non-finite {what} at step {step}: stopping before the update reaches the "
                f"weights{where} (train.on_nonfinite={self.cfg.on_nonfinite}, "
                f"train.max_nonfinite_skips={self.cfg.max_nonfinite_skips})"
            )
        self.say(f"step {step}: non-finite {what}, update skipped")

    def finite_loss_applied(self, loss: float) -> None:
        """A pipeline's update went through with finite gradients but a non-finite mean loss
        (the loss reaches the loop only after the update)."""
        msg = f"non-finite loss at step {self.state.step + 1} with finite gradients: the update was applied"
        if self.cfg.on_nonfinite == "stop":
            raise NonFiniteStop(msg + " (train.on_nonfinite=stop)")
        self.say(msg)
