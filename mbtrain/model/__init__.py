"""The model package: MegaByte, the byte-level baseline, FLOP accounting, generation, scoring.

Pure PyTorch: no torch.distributed, no DeepSpeed, no I/O. Parallelism is applied from
outside (`mbtrain.parallel`) through the module structure documented in `layers.py` and
the decomposition methods of `MegaByte` / `ByteTransformer`.
"""

from __future__ import annotations

from torch import nn

from mbtrain.errors import ConfigError
from mbtrain.model.baseline import ByteTransformer
from mbtrain.model.config import ModelConfig
from mbtrain.model.flops import count_parameters, flops_per_byte
from mbtrain.model.generate import cached_logprobs, generate
from mbtrain.model.megabyte import MegaByte
from mbtrain.model.scoring import ScoreResult, score_bytes


def build_model(cfg: ModelConfig) -> nn.Module:
    """A MegaByte or ByteTransformer for `cfg`, on CPU in float32; raises ConfigError if invalid."""
    problems = cfg.validate()
    if problems:
        raise ConfigError("; ".join(problems))
    if cfg.arch == "transformer":
        return ByteTransformer(cfg)
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
