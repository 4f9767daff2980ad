"""The model package: MegaByte, the byte-level baseline, FLOP accounting, generation, scoring.

Pure PyTorch: no torch.distributed, no DeepSpeed, no I/O. Parallelism is applied from
outside (`mbtrain.parallel`) through the module structure documented in `layers.py` and
the decomposition methods of `MegaByte` / `ByteTransformer`.

Contract (other packages code against it):

* `model = build_model(cfg)`; `model(x)` with x LongTensor [B, T] of bytes returns logits
  [B, T, 256], where logits[:, t] depends only on x[:, :t] and predicts x[:, t]. Any T works
  (T <= cfg.seq_len with `pos: learned`); T need not be a multiple of P.
* `model.loss(x, mask=None)`: mean cross-entropy in nats over positions where the bool mask
  [B, T] is True; the head runs in chunks of `cfg.loss_chunk_size` positions.
  `model.nll(x)`: per-byte NLL [B, T] without autograd.
* Pipelining: `h = model.embed_global(x)`; `for block in model.global_model.blocks: h =
  block(h)`; then `model.local_head(h, x, mask)` (loss) or `model.local_logits(h, x)`.
* Tensor parallelism: blocks have `attn_norm`, `attn` (`q_proj`, `k_proj`, `v_proj`,
  `out_proj`; head count read from `q_proj.out_features // attn.head_dim`), `mlp_norm`,
  `mlp` (`up_proj`, `gate_proj` for swiglu, `down_proj`).
* `count_parameters(cfg)` equals the built model's parameter count; `flops_per_byte(cfg,
  training=True)` is the analytic model FLOPs per byte for MFU.
* `generate(model, prompt, max_bytes, temperature, top_k, top_p, seed, stop)` yields ints;
  `score_bytes(model, data, context, mode, stride, batch_size)` returns `ScoreResult(nats,
  count)` with `.bpb`.
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
