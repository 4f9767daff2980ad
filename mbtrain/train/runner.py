"""A run config's engine and its step, without a run directory: for benchmarks and tests that
feed their own batches. The same pieces the trainer wires (`setup.py`), minus the lock,
loaders, checkpoints and monitoring; freed host memory is kept as the trainer keeps it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from mbtrain.parallel.distributed import init_distributed
from mbtrain.train import pipeline_step, step
from mbtrain.train.engine import TrainEngine, build_engine
from mbtrain.train.host_memory import keep_freed_memory
from mbtrain.train.nonfinite import NonFinitePolicy
from mbtrain.train.run_config import RunConfig, check_layout
from mbtrain.train.state import TrainState


class StepRunner:
    """`StepRunner(cfg).step(batches)`: one optimizer step on the next micro-batches."""

    def __init__(self, cfg: RunConfig) -> None:
        if cfg.train.keep_host_memory:
            keep_freed_memory()
        self.cfg, self.state = cfg, TrainState()
        self.env = init_distributed(cfg.train.device, cfg.parallel.backend)
        self.layout = check_layout(cfg, self.env.world_size)
        self.policy = NonFinitePolicy(
            cfg.train, self.state, lambda v: self.te.all_reduce(v), lambda: None, lambda _: None
        )
        self.te: TrainEngine = build_engine(
            cfg.model, cfg.parallel, cfg.train, cfg.optim, self.layout, self.env,
            self.policy.should_skip,
        )  # fmt: skip
        self.policy.check_gradients = self.layout.pipeline_enabled and (
            self.layout.zero_stage == 0 or cfg.train.precision == "bf16"
        )
        self._batches = iter(())

    def feed(self, batches: Iterable[dict]) -> None:
        """The micro-batches the next steps read, in order (dicts with "x", "mask", ...)."""
        self._batches = iter(batches)

    def step(self) -> dict:
        """One optimizer step; the step's result as a dict (loss, bytes, grad_norm, skipped)."""
        tr = self.cfg.train
        if self.te.pipeline:
            out = pipeline_step.train_step(self.te, self._batches, tr.grad_accum, self.policy)
        else:
            out = step.train_step(
                self.te, self._batches, tr.grad_accum, self.policy, self.cfg.model.doc_mask,
                tr.precision,
            )  # fmt: skip
        self.state.step += 1
        return dataclasses.asdict(out)
