"""Validation loss and a generated sample, at `train.eval_every` and at the end of training.

The validation loss is weighted by each micro-batch's byte count and summed over every rank,
so it is the mean over the validation bytes read whatever the layout. Batches are fetched in
step with every rank (`batches.py`): a validation split that became unreadable stops every
rank with its path named instead of silently skipping the evaluation.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import deepspeed
import torch

from mbtrain.model import generate
from mbtrain.monitor.watchdog import Watchdog
from mbtrain.train.batches import next_agreed, to_inputs
from mbtrain.train.config import TrainConfig
from mbtrain.train.engine import TrainEngine
from mbtrain.train.pipeline_step import eval_loss

LN2 = math.log(2)


class Evaluator:
    def __init__(
        self,
        te: TrainEngine,
        cfg: TrainConfig,
        val_loader: Any,
        doc_mask: bool,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.te, self.cfg, self.val_loader = te, cfg, val_loader
        self.doc_mask, self.watchdog = doc_mask, watchdog

    def maybe_evaluate(self, step: int) -> dict | None:
        """The evaluation row of `step` if one is due there (not the last step: `final`)."""
        every = self.cfg.eval_every
        if not every or step % every or step >= self.cfg.steps:
            return None
        return self.final(step)

    def final(self, step: int) -> dict | None:
        """Validation loss and sample now (also at the end of training)."""
        if self.watchdog is not None:
            self.watchdog.pause()  # evaluation gets the watchdog's full limit of its own
        row = self.evaluate()
        text = self.sample()
        if self.watchdog is not None:
            self.watchdog.pause()
        if row is None:
            return None
        return {"step": step, **row, **({"sample": text} if text is not None else {})}

    @torch.no_grad()
    def evaluate(self) -> dict[str, float] | None:
        """{"val_loss", "val_bpb"} over `train.eval_batches` micro-batches, or None."""
        if self.val_loader is None:
            return None
        te = self.te
        te.engine.eval()
        nats = count = 0.0
        it = iter(self.val_loader)
        for _ in range(self.cfg.eval_batches):
            batch = next_agreed(it, te)
            if batch is None:
                break
            x, mask, segments = to_inputs(batch, te.device, self.doc_mask)
            n = float(mask.sum().item())
            loss = eval_loss(te, x, mask) if te.pipeline else te.engine(x, mask, segments)
            nats += float(loss.float().item()) * n
            count += n
        del it
        nats, count = te.all_reduce([nats, count])
        te.engine.train()
        if not count:
            return None
        return {"val_loss": nats / count, "val_bpb": nats / count / LN2}

    def sample(self) -> str | None:
        """A generated sample (all ranks run it in lockstep; rank 0 keeps it)."""
        n = self.cfg.sample_bytes
        te = self.te
        if not n or te.pipeline:
            return None
        model = te.model
        ctx = nullcontext()
        if te.layout.zero_stage == 3:
            ctx = deepspeed.zero.GatheredParameters(list(model.parameters()), modifier_rank=None)
        te.engine.eval()
        prompt = self.cfg.sample_prompt.encode()
        with ctx, torch.no_grad():
            out = bytes(
                generate(model, prompt, max_bytes=n, temperature=0.8, top_k=40, seed=self.cfg.seed)
            )
        te.engine.train()
        return (prompt + out).decode("utf-8", errors="replace")
