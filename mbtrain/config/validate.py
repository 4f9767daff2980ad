"""Cross-field checks that need more than one section, run before anything heavy starts.

Everything here is arithmetic on the config and the world size, so `mbtrain train --dry-run`
and `mbtrain submit` catch a bad layout on the login node instead of after the allocation.
The parallel arithmetic itself belongs to the layout object (`ParallelLayout.problems`);
this module adds the batch arithmetic and reports everything at once.
"""

from __future__ import annotations

from mbtrain.config.schema import RunConfig
from mbtrain.errors import ConfigError
from mbtrain.parallel.layout import ParallelLayout


def check_layout(cfg: RunConfig, world_size: int) -> ParallelLayout:
    """Return the layout, or raise ConfigError listing every cross-field problem."""
    layout = ParallelLayout.from_config(cfg.parallel, world_size)
    errors = layout.problems(cfg.model)
    tr = cfg.train
    if layout.data:
        derived = tr.global_batch(layout.data)
        if tr.global_batch_size and tr.global_batch_size != derived:
            per = tr.micro_batch_size * layout.data
            hint = (
                f"; set train.grad_accum={tr.global_batch_size // per}"
                if tr.global_batch_size % per == 0
                else ""
            )
            errors.append(
                f"train.global_batch_size ({tr.global_batch_size}) must equal "
                f"train.micro_batch_size ({tr.micro_batch_size}) x train.grad_accum "
                f"({tr.grad_accum}) x data-parallel size ({layout.data}) = {derived}{hint}"
            )
    # ZeRO <= 1 with a pipeline is a ParallelConfig check: it needs no world size.
    if errors:
        lines = "\n".join(f"  - {e}" for e in errors)
        raise ConfigError(f"invalid parallel layout for {world_size} processes:\n{lines}")
    return layout
