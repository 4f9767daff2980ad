"""The model package: MegaByte, the byte-level baseline, FLOP accounting, generation, scoring.

Pure PyTorch: no torch.distributed, no DeepSpeed, no I/O. Parallelism is applied from
outside (`mbtrain.parallel`) through the module structure documented in `layers.py` and
the decomposition methods of `MegaByte` / `ByteTransformer`.

Public API (contract relied on by training, parallelism and the CLI):
- `build_model(cfg) -> nn.Module`; `model(x)` with x LongTensor [B, T] of byte values returns
  next-byte logits [B, T, 256], logits[:, t] depending only on x[:, :t];
  `model.loss(x, mask=None)` is the mean cross-entropy (nats) over positions where mask is
  True, computed in chunks so [B, T, 256] float logits never exist at once.
- `count_parameters(cfg)`, `flops_per_byte(cfg, training=True)`: analytic accounting.
- `generate(...)`: KV-cached sampling; `score_bytes(...)`: basic/sliding/strided scoring.

Exports resolve lazily: `ModelConfig` is needed by config validation on login nodes, where
importing torch (seconds) for it would only slow `mbtrain submit` down.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from mbtrain.model.config import ModelConfig

if TYPE_CHECKING:
    from torch import nn

_LAZY = {
    "ByteTransformer": "mbtrain.model.baseline",
    "MegaByte": "mbtrain.model.megabyte",
    "count_parameters": "mbtrain.model.flops",
    "flops_per_byte": "mbtrain.model.flops",
    "cached_logprobs": "mbtrain.model.decode",
    "generate": "mbtrain.model.decode",
    "ScoreResult": "mbtrain.model.scoring",
    "score_bytes": "mbtrain.model.scoring",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mbtrain.model' has no attribute {name!r}")


def build_model(cfg: ModelConfig) -> nn.Module:
    """A MegaByte or ByteTransformer for `cfg`, on CPU in float32; raises ConfigError if invalid."""
    from mbtrain.errors import ConfigError

    problems = cfg.validate()
    if problems:
        raise ConfigError("; ".join(problems))
    if cfg.arch == "transformer":
        from mbtrain.model.baseline import ByteTransformer

        return ByteTransformer(cfg)
    from mbtrain.model.megabyte import MegaByte

    return MegaByte(cfg)


__all__ = [
    "ByteTransformer",
    "MegaByte",
    "ModelConfig",
    "ScoreResult",
    "build_model",
    "cached_logprobs",
    "count_parameters",
    "flops_per_byte",
    "generate",
    "score_bytes",
]
