"""Cross-field checks that need more than one section, run before anything heavy starts.

Everything here is arithmetic on the config and the world size, so `mbtrain train --dry-run`
and `mbtrain submit` catch a bad layout on the login node instead of after the allocation.
"""

from __future__ import annotations

from dataclasses import dataclass

from mbtrain.config.schema import RunConfig
from mbtrain.errors import ConfigError


@dataclass(frozen=True)
class Layout:
    """Process layout and batch arithmetic of a run: world = pipeline x data x tensor."""

    world_size: int
    tensor: int
    pipeline: int
    data: int
    micro_batch_size: int
    grad_accum: int
    global_batch_size: int


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _model_heads_layers(cfg: RunConfig) -> tuple[str, int, int]:
    m = cfg.model
    if m.arch == "megabyte":
        return "model.global", m.global_heads, m.global_layers
    return "model", m.heads, m.layers


def check_layout(cfg: RunConfig, world_size: int) -> Layout:
    """Return the layout, or raise ConfigError listing every cross-field problem."""
    errors: list[str] = []
    par, tr = cfg.parallel, cfg.train
    mp = par.tensor * par.pipeline
    dp = world_size // mp if mp and world_size % mp == 0 else 0
    if world_size < 1:
        errors.append(f"world size must be >= 1, got {world_size}")
    elif world_size % mp:
        ok = [f"tensor x pipeline = {d}" for d in _divisors(world_size)]
        errors.append(
            f"parallel.tensor ({par.tensor}) x parallel.pipeline ({par.pipeline}) = {mp} does not "
            f"divide the world size ({world_size}); valid: {', '.join(ok)}"
        )
    if dp:
        derived = tr.micro_batch_size * tr.grad_accum * dp
        if tr.global_batch_size and tr.global_batch_size != derived:
            per = tr.micro_batch_size * dp
            hint = (
                f"; set train.grad_accum={tr.global_batch_size // per}"
                if tr.global_batch_size % per == 0
                else ""
            )
            errors.append(
                f"train.global_batch_size ({tr.global_batch_size}) must equal "
                f"train.micro_batch_size ({tr.micro_batch_size}) x train.grad_accum "
                f"({tr.grad_accum}) x data-parallel size ({dp}) = {derived}{hint}"
            )
    prefix, heads, layers = _model_heads_layers(cfg)
    if heads % par.tensor:
        errors.append(
            f"{prefix}_heads ({heads}) must be divisible by parallel.tensor ({par.tensor}); "
            f"valid tensor sizes: {', '.join(map(str, _divisors(heads)))}"
        )
    if layers % par.pipeline:
        errors.append(
            f"{prefix}_layers ({layers}) must be divisible by parallel.pipeline ({par.pipeline}); "
            f"valid pipeline sizes: {', '.join(map(str, _divisors(layers)))}"
        )
    # ZeRO <= 1 with a pipeline is a ParallelConfig check: it needs no world size.
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ConfigError(f"invalid parallel layout for {world_size} processes:\n{lines}")
    return Layout(
        world_size=world_size,
        tensor=par.tensor,
        pipeline=par.pipeline,
        data=dp,
        micro_batch_size=tr.micro_batch_size,
        grad_accum=tr.grad_accum,
        global_batch_size=tr.micro_batch_size * tr.grad_accum * dp,
    )
