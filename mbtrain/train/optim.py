"""AdamW with decoupled weight decay groups, and the learning-rate schedules.

Decay applies to weight matrices only: norms, biases and embeddings are excluded, the usual
practice since decaying them only pulls scales and the byte table towards zero.
The optimizer can skip an update: it asks a `should_skip` function (the run's non-finite
policy, `mbtrain.train.nonfinite`) at every `step()`, so a non-finite loss never reaches the
weights, also under ZeRO, where DeepSpeed calls this optimizer's `step` on its partitions.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from mbtrain.train.config import OptimConfig

SkipQuestion = Callable[[torch.optim.Optimizer], bool]


class SkippableAdamW(torch.optim.AdamW):
    """AdamW whose update is skipped when `should_skip(self)` says so.

    DeepSpeed's ZeRO optimizers call `step()` once per parameter group, so `should_skip` must
    give one answer for every call of one engine step. `overflow` is read by DeepSpeed's
    engine when this is its optimizer (fp32 without ZeRO): the skip then counts as skipped
    there too, with no scheduler step. Under DeepSpeed's wrappers (ZeRO, bf16) the wrapper's
    own `overflow` is read instead, so a skip decided here still steps the schedule;
    DeepSpeed's own invalid-gradient skips (the usual case) do not.
    """

    def __init__(self, params, *, should_skip: SkipQuestion | None = None, **kwargs) -> None:
        super().__init__(params, **kwargs)
        self.should_skip = should_skip
        self.overflow = False

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        skip = self.should_skip is not None and self.should_skip(self)
        self.overflow = skip
        if skip:
            return None
        return super().step(closure)


def _no_decay(name: str, param: nn.Parameter) -> bool:
    lname = name.lower()
    return param.ndim < 2 or "embed" in lname or "norm" in lname or "pad" in lname or "pos" in lname


def build_param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if _no_decay(name, param) else decay).append(param)
    # `decays` travels in the optimizer's state: a resume re-applies the config's weight decay
    # to the group that has it (apply_hyperparameters).
    groups = [{"params": decay, "weight_decay": weight_decay, "decays": True}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "decays": False})
    return groups


def build_optimizer(
    model: nn.Module, cfg: OptimConfig, should_skip: SkipQuestion | None = None
) -> SkippableAdamW:
    return SkippableAdamW(
        build_param_groups(model, cfg.weight_decay),
        should_skip=should_skip,
        lr=cfg.lr,
        betas=(cfg.betas[0], cfg.betas[1]),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        foreach=False,
    )


def lr_factor(step: int, cfg: OptimConfig, total_steps: int) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    decay_steps = max(1, (cfg.decay_steps or total_steps) - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    floor = cfg.min_lr_ratio
    if cfg.schedule == "cosine":
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    if cfg.schedule == "linear":
        return floor + (1 - floor) * (1 - progress)
    return floor + (1 - floor) * (1 - progress) ** cfg.power  # polynomial


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    """LambdaLR over `lr_factor`. The lambda is a plain function on purpose: LambdaLR saves
    (and on load restores over the new one) the attributes of callable *objects*, which
    silently kept a resumed run on its old schedule (old total steps, warmup, decay)."""

    def factor(step: int) -> float:
        return lr_factor(step, cfg, total_steps)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def apply_schedule(scheduler, cfg: OptimConfig) -> list[tuple[float, float]]:
    """After a resume: the peak lr comes from this run's config, not from the checkpoint (its
    `base_lrs` were restored with the scheduler's state); the step count stays. Sets every
    group's current lr accordingly and returns the (old, new) peak lrs that differed."""
    changed = []
    for i, group in enumerate(scheduler.optimizer.param_groups):
        old = scheduler.base_lrs[i]
        if old != cfg.lr:
            changed.append((old, cfg.lr))
        scheduler.base_lrs[i] = cfg.lr
        group["initial_lr"] = cfg.lr
    step = max(scheduler.last_epoch, 0)
    for group, base, fn in zip(
        scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * fn(step)
    scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]
    return changed


def apply_hyperparameters(optimizer, cfg: OptimConfig) -> list[str]:
    """After a resume: weight decay, betas and eps come from this run's config too (loading
    the optimizer's state restored the checkpoint's param groups, which would otherwise keep
    the old values without a word). The group without decay (norms, embeddings, pads; built
    second) keeps 0. Returns one "optim.key old -> new" line per setting that changed."""
    changed: dict[str, str] = {}
    for i, group in enumerate(optimizer.param_groups):
        wanted = {"betas": (cfg.betas[0], cfg.betas[1]), "eps": cfg.eps}
        if group.get("decays", i == 0):
            wanted["weight_decay"] = cfg.weight_decay
        for key, new in wanted.items():
            old = group.get(key)
            if old is None:
                continue
            if (tuple(old) if key == "betas" else old) != new:
                changed[key] = f"optim.{key} {_show(old)} -> {_show(new)}"
            group[key] = new
    return list(changed.values())


def _show(value) -> str:
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return f"{value:g}"
