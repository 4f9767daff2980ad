"""Transformer building blocks shared by MegaByte's global and local models and the baseline.

Why the structure is what it is:

* Attention keeps separate `q_proj`, `k_proj`, `v_proj`, `out_proj` linears and computes its
  head count at run time as `q_proj.out_features // head_dim`, so tensor parallelism
  (applied from outside, in `mbtrain.parallel`) can swap in column/row-sharded linears that
  hold fewer heads without touching this file.
* RoPE is applied inside attention from positions computed from the sequence length (plus
  the KV-cache length when decoding), so a pipeline stage can call `block(h)` with nothing
  but the hidden states. Positions and the attention itself form `AttentionCore`, which
  context parallelism wraps from outside (it then sees the whole sequence).
* Activation checkpointing lives in `Block.forward` (flag `block.checkpoint`), so it applies
  whether the model or a pipeline stage calls the block.
* A `KVCache` per layer makes decoding one position at a time cost O(context) per step.
* Every attention goes through SDPA, also the local model's B*K sequences of P = 8 bytes:
  plain matmul attention for them was measured no faster on the CPU (benchmarks/NOTES.md).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from mbtrain.model.config import ModelConfig


def build_norm(cfg: ModelConfig, dim: int) -> nn.Module:
    """LayerNorm (paper) or RMSNorm, per `cfg.norm`."""
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(dim, eps=cfg.norm_eps)
    return nn.LayerNorm(dim, eps=cfg.norm_eps)


def norm_params(cfg: ModelConfig, dim: int) -> int:
    """Parameters of one norm of width `dim` (LayerNorm has a bias, RMSNorm has not)."""
    return dim if cfg.norm == "rmsnorm" else 2 * dim


def mlp_hidden(cfg: ModelConfig, dim: int) -> int:
    """MLP hidden width for a block of width `dim`."""
    return int(cfg.mlp_ratio * dim)


def rope_cos_sin(
    positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype
) -> tuple[Tensor, Tensor]:
    """cos and sin tables (L, head_dim/2) for the given integer positions."""
    inv_freq = 1.0 / (
        theta
        ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim)
    )
    angles = positions.to(torch.float32)[:, None] * inv_freq[None, :]  # (L, hd/2)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate pairs (x[2i], x[2i+1]) of x (B, H, L, hd) by the position angles."""
    x1, x2 = x[..., 0::2], x[..., 1::2]  # (B, H, L, hd/2)
    out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
    return out.flatten(-2)


class KVCache:
    """Keys and values (B, H, L, hd) of one attention layer seen so far.

    Stored in a buffer that doubles when full, so appending one position costs amortised
    O(1) instead of copying the whole cache (torch.cat) at every decoding step. For decoding
    only (no autograd through the in-place writes).
    """

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None
        self.length = 0

    def append(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Add the new positions and return all keys and values."""
        new = k.shape[2]
        end = self.length + new
        if self.k is None or end > self.k.shape[2]:
            cap = max(end, 2 * (0 if self.k is None else self.k.shape[2]), 64)
            k_buf = k.new_empty(*k.shape[:2], cap, k.shape[3])
            v_buf = v.new_empty(*v.shape[:2], cap, v.shape[3])
            if self.k is not None:
                k_buf[:, :, : self.length] = self.k[:, :, : self.length]
                v_buf[:, :, : self.length] = self.v[:, :, : self.length]
            self.k, self.v = k_buf, v_buf
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


@dataclass
class AttentionContext:
    """Per-call facts attention needs besides the hidden states, handed down by the caller
    through every block (and kept for activation checkpointing's recomputation)."""

    sequence_shard: bool = False
    """The hidden states are this rank's contiguous share of a longer sequence: context
    parallelism then runs the core on the whole sequence (see mbtrain.parallel.context)."""
    segments: Tensor | None = None
    """(B, L) document id of every position of the sequence the core attends over (the
    whole sequence, also under context parallelism): attention stays within a document."""


DENSE_MASK_LIMIT = 1 << 24
"""Above this many mask entries (B x L x L), document attention always runs per document
instead of through one dense mask (which SDPA would also expand to a float bias of that size)."""

PER_DOCUMENT_MIN_POSITIONS = 16
"""Documents averaging at least this many positions run per document below the limit too:
one causal SDPA call per document skips the blocks a dense mask would compute and then mask
(on the CPU 2-3x faster at 2-30 documents in 1,024 positions; the loop's overhead per call
makes it break even near 100, i.e. ~10 positions each: benchmarks/NOTES.md)."""


def document_attention(
    q: Tensor, k: Tensor, v: Tensor, segments: Tensor, dropout_p: float
) -> Tensor:
    """Causal attention within documents: q, k, v (B, H, L, hd), segments (B, L)."""
    from mbtrain.model.documents import document_mask, run_starts

    b, _, length, _ = q.shape
    starts = run_starts(segments)
    n_docs = int(starts.sum())  # starts[:, 0] is always set: b documents at least
    if n_docs == b:  # one document per row: plain causal attention
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
    short_docs = n_docs * PER_DOCUMENT_MIN_POSITIONS > b * length
    if short_docs and b * length * length <= DENSE_MASK_LIMIT:
        mask = document_mask(segments)  # (B, 1, L, L)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    # Each document on its own, no L x L mask at all.
    out = torch.empty_like(q)
    for i in range(b):
        bounds = [*starts[i].nonzero().flatten().tolist(), length]
        for s0, s1 in itertools.pairwise(bounds):
            out[i : i + 1, :, s0:s1] = F.scaled_dot_product_attention(
                q[i : i + 1, :, s0:s1],
                k[i : i + 1, :, s0:s1],
                v[i : i + 1, :, s0:s1],
                dropout_p=dropout_p,
                is_causal=True,
            )
    return out


class AttentionCore(nn.Module):
    """Positions and scaled dot-product attention on q, k, v of shape (B, L, H, hd).

    A module of its own, without parameters, so that parallelism can wrap exactly this part:
    context parallelism (Ulysses) exchanges sequence shards for head shards around it, so it
    sees every position of the sequence and gives RoPE the true positions.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.use_rope = cfg.pos == "rope"
        self.rope_theta = cfg.rope_theta
        self.dropout = cfg.dropout

    def forward(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        cache: KVCache | None = None,
        ctx: AttentionContext | None = None,
    ) -> Tensor:
        length, head_dim = q.shape[1], q.shape[-1]
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, H, L, hd)
        past = 0 if cache is None else cache.length
        if self.use_rope:
            positions = torch.arange(past, past + length, device=q.device)
            cos, sin = rope_cos_sin(positions, head_dim, self.rope_theta, q.dtype)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.append(k, v)
        dropout_p = self.dropout if self.training else 0.0
        segments = None if ctx is None else ctx.segments
        if past == 0 and segments is not None:
            y = document_attention(q, k, v, segments, dropout_p)
        elif past == 0:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        elif length == 1:
            # One new query sees the whole cache: no mask needed.
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
        else:
            # is_causal aligns the mask top-left; with a cache the queries sit bottom-right.
            total = past + length
            mask = torch.ones(length, total, dtype=torch.bool, device=q.device).tril(past)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        return y.transpose(1, 2)  # (B, L, H, hd)


class Attention(nn.Module):
    """Causal multi-head self-attention: projections around an `AttentionCore`."""

    def __init__(self, cfg: ModelConfig, dim: int, n_heads: int) -> None:
        super().__init__()
        self.head_dim = dim // n_heads
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.out_proj = nn.Linear(dim, dim, bias=False)
        self.core = AttentionCore(cfg)
        self.dropout = cfg.dropout

    def forward(
        self, x: Tensor, cache: KVCache | None = None, ctx: AttentionContext | None = None
    ) -> Tensor:
        b, length, _ = x.shape
        # Head counts from the (possibly sharded) linears, not from the config.
        n_q = self.q_proj.out_features // self.head_dim
        n_kv = self.k_proj.out_features // self.head_dim
        q = self.q_proj(x).view(b, length, n_q, self.head_dim)  # (B, L, H, hd)
        k = self.k_proj(x).view(b, length, n_kv, self.head_dim)
        v = self.v_proj(x).view(b, length, n_kv, self.head_dim)
        y = self.core(q, k, v, cache, ctx)  # (B, L, H, hd)
        return self.out_proj(y.reshape(b, length, n_q * self.head_dim))  # (B, L, D)


class MLP(nn.Module):
    """GELU MLP (paper) or SwiGLU, with `up_proj` (+ `gate_proj`) and `down_proj`."""

    def __init__(self, cfg: ModelConfig, dim: int) -> None:
        super().__init__()
        hidden = mlp_hidden(cfg, dim)
        self.swiglu = cfg.activation == "swiglu"
        if self.swiglu:
            self.gate_proj = nn.Linear(dim, hidden, bias=False)
        self.up_proj = nn.Linear(dim, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        if self.swiglu:
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return self.down_proj(F.gelu(self.up_proj(x)))


class Block(nn.Module):
    """Pre-norm transformer block: h + attn(norm(h)), then h + mlp(norm(h))."""

    def __init__(self, cfg: ModelConfig, dim: int, n_heads: int) -> None:
        super().__init__()
        self.attn_norm = build_norm(cfg, dim)
        self.attn = Attention(cfg, dim, n_heads)
        self.mlp_norm = build_norm(cfg, dim)
        self.mlp = MLP(cfg, dim)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        self.checkpoint = cfg.activation_checkpointing

    def _forward(
        self, h: Tensor, cache: KVCache | None = None, ctx: AttentionContext | None = None
    ) -> Tensor:
        h = h + self.resid_dropout(self.attn(self.attn_norm(h), cache, ctx))
        return h + self.resid_dropout(self.mlp(self.mlp_norm(h)))

    def forward(
        self, h: Tensor, cache: KVCache | None = None, ctx: AttentionContext | None = None
    ) -> Tensor:
        if self.checkpoint and cache is None and torch.is_grad_enabled():
            return checkpoint(self._forward, h, None, ctx, use_reentrant=False)
        return self._forward(h, cache, ctx)


class TransformerStack(nn.Module):
    """A causal stack of blocks (`blocks`, an nn.ModuleList) and its final norm (`norm`)."""

    def __init__(self, cfg: ModelConfig, dim: int, n_layers: int, n_heads: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(Block(cfg, dim, n_heads) for _ in range(n_layers))
        self.norm = build_norm(cfg, dim)

    def forward(
        self,
        h: Tensor,
        caches: list[KVCache] | None = None,
        ctx: AttentionContext | None = None,
    ) -> Tensor:
        """Apply all blocks; the final norm is left to the caller (pipeline stages split here)."""
        for i, block in enumerate(self.blocks):
            h = block(h, None if caches is None else caches[i], ctx)
        return h

    def new_caches(self) -> list[KVCache]:
        return [KVCache() for _ in self.blocks]


def trunc_normal_(p: Tensor, std: float) -> None:
    """Truncated normal init cut at +-3 std (the paper's init, std 0.006)."""
    nn.init.trunc_normal_(p, mean=0.0, std=std, a=-3 * std, b=3 * std)


def init_weights(module: nn.Module, std: float) -> None:
    """Truncated normal on every linear and embedding weight; norms keep weight 1, bias 0."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            trunc_normal_(m.weight, std)


def shift_right(x: Tensor, first: Tensor) -> Tensor:
    """Drop the last position of x (..., L, D) and put `first` (D) in front."""
    pad = first.expand(*x.shape[:-2], 1, x.shape[-1])
    return torch.cat([pad, x[..., :-1, :]], dim=-2)


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


__all__ = [
    "MLP",
    "Attention",
    "AttentionContext",
    "AttentionCore",
    "Block",
    "KVCache",
    "TransformerStack",
    "build_norm",
    "ceil_div",
    "init_weights",
    "mlp_hidden",
    "norm_params",
    "shift_right",
    "trunc_normal_",
]
