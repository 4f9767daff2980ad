"""Analytic activation memory of one training micro-batch, counted the way autograd keeps it.

What autograd saves for backward, per transformer block of width d over N positions, in units
of N x d elements (found by reading the ops and checked against `saved_tensors_hooks` in the
tests, exactly):

    attention  norm input 1, q/k/v linear input 1, SDPA's q, k, v and output 4 (the
               output, laid out (B, L, H, hd), is also out_proj's input)   = 6
               (+1 with RoPE: the rotation keeps a copy of the projected queries/keys)
    MLP        norm input 1, up/gate input 1,
               hidden activations 2 x mlp_ratio (gelu) or 4 x mlp_ratio (swiglu)

RoPE, the residual adds and the TP region markers save nothing of that size. Tensor
parallelism shards what lives in heads or in the MLP hidden width (4 of the 6 attention
units, and the hidden activations); context parallelism divides N (the Ulysses all-to-all
hands SDPA the whole sequence with H/C heads: the same element count). Under activation
checkpointing a block keeps only its input (1), and during backward one block's activations
are rebuilt at a time.

Around the blocks: the global final norm's input and the global-to-local projection's input
(N_G x W each), the local model's output before the loss (N_L x D_L; the loss is chunked and
recomputed, so logits never add up). A chunked local model (`model.local_chunk`) with
checkpointing keeps the chunks' inputs only and rebuilds one chunk at a time.

Document masking that runs attention once per document (windows of a few long documents,
see `layers.document_attention`) keeps each document's attention output besides the joined
one: one more unit per block of the model whose windows hold several documents, not counted
here (a few percent of a block's total).

`transient` is what exists only for a moment during backward: the gradient of the largest
activation being propagated plus one chunk of logits (a few N x d). Real allocators add
fragmentation on top: the benchmark compares the total with measured peaks.

Ring attention (`ring`: the ring size of context parallelism) adds `ring_buffers`, also only
for the time of one attention's backward: the held keys and values and the pair in flight
(2 + 2 units of N_G x W / TP in the compute dtype), their float32 gradients travelling with
them and the pair in flight (2 + 2 in float32) and the float32 query gradient (1); with
document masking, one additive mask of a tile and its boolean, B x t x t x (dtype + 1) with
t = min(c, mask_tile) (c = K / 2 ring; the ring cuts masked chunk pairs into tiles).
"""

from __future__ import annotations

from dataclasses import dataclass

from mbtrain.model.config import ModelConfig

RING_MASK_TILE = 8192
"""Largest tile (query and key positions) of a ring attention block that a document boundary
crosses: its additive mask is RING_MASK_TILE^2 elements (128 MiB in bf16 per sequence),
whatever the chunk (`mbtrain.parallel.ring` cuts masked blocks into such tiles)."""

N_BYTES = 256


@dataclass(frozen=True)
class ActivationMemory:
    """Bytes per rank for one micro-batch."""

    global_blocks: int
    local_blocks: int
    around: int
    transient: int
    ring_buffers: int = 0

    @property
    def total(self) -> int:
        return (
            self.global_blocks
            + self.local_blocks
            + self.around
            + self.transient
            + self.ring_buffers
        )


def block_units(cfg: ModelConfig, tensor: int = 1) -> float:
    """Saved elements per position of one block, in units of its width (see docstring)."""
    hidden = cfg.mlp_ratio * (4 if cfg.activation == "swiglu" else 2)
    heads = 4 + (1 if cfg.pos == "rope" else 0)
    dropout = 2 / 4 if cfg.dropout > 0 else 0.0  # two residual masks of 1 byte per element
    return 2 + heads / tensor + 2 + hidden / tensor + dropout


def activation_memory(
    cfg: ModelConfig,
    micro_batch: int,
    dtype_bytes: int = 4,
    *,
    tensor: int = 1,
    context: int = 1,
    ring: int = 1,
    mask_tile: int = RING_MASK_TILE,
    split_local: bool = True,
    checkpointing: bool | None = None,
) -> ActivationMemory:
    """Activation bytes per rank of one training micro-batch of `cfg` (see module docstring)."""
    ckpt = cfg.activation_checkpointing if checkpointing is None else checkpointing
    b, t = micro_batch, cfg.seq_len
    if cfg.arch == "transformer":
        n, d = b * t // context, cfg.dim
        per_block = block_units(cfg, tensor) * n * d * dtype_bytes
        kept = cfg.layers * (n * d * dtype_bytes if ckpt else per_block)
        rebuilt = per_block if ckpt else 0
        around = n * d * dtype_bytes
        transient = rebuilt + 3 * n * d * dtype_bytes
        buffers = _ring_buffers(cfg, b, n, d, tensor, ring, dtype_bytes, mask_tile)
        return ActivationMemory(
            int(kept), 0, int(around), int(transient + _logits(cfg, b, context)), buffers
        )
    p, w, d_l = cfg.patch_size, cfg.patch_size * cfg.global_dim, cfg.local_dim
    n_g = b * (t // p) // context
    n_l = b * t // context // (tensor if split_local and tensor > 1 else 1)
    n_l = n_l * (p + cfg.local_context) // p  # the local model also runs the context bytes
    g_block = block_units(cfg, tensor) * n_g * w * dtype_bytes
    l_block = block_units(cfg, 1) * n_l * d_l * dtype_bytes
    g_kept = cfg.global_layers * (n_g * w * dtype_bytes if ckpt else g_block)
    chunk = cfg.local_chunk
    if ckpt and chunk and chunk * p < n_l:
        # Chunks checkpointed whole: their inputs are kept, one chunk is rebuilt at a time.
        l_kept = n_l * d_l * dtype_bytes
        l_rebuilt = cfg.local_layers * l_block * (chunk * p / n_l)
    else:
        l_kept = cfg.local_layers * (n_l * d_l * dtype_bytes if ckpt else l_block)
        l_rebuilt = l_block if ckpt else 0
    around = (2 * n_g * w + n_l * d_l) * dtype_bytes
    rebuilt = max(g_block if ckpt else 0, l_rebuilt)
    transient = rebuilt + 3 * max(n_g * w, n_l * d_l) * dtype_bytes + _logits(cfg, b, context)
    buffers = _ring_buffers(cfg, b, n_g, w, tensor, ring, dtype_bytes, mask_tile)
    return ActivationMemory(int(g_kept), int(l_kept), int(around), int(transient), buffers)


def _ring_buffers(
    cfg: ModelConfig,
    b: int,
    n: int,
    width: int,
    tensor: int,
    ring: int,
    dtype_bytes: int,
    mask_tile: int,
) -> int:
    """Ring attention's buffers during one attention's backward (see module docstring)."""
    if ring <= 1:
        return 0
    units = n * width // tensor
    buffers = 4 * units * dtype_bytes + 5 * units * 4
    if cfg.doc_mask:
        positions = cfg.seq_len // (cfg.patch_size if cfg.arch == "megabyte" else 1)
        tile = min(positions // (2 * ring), mask_tile)
        buffers += b * tile * tile * (dtype_bytes + 1)
    return int(buffers)


def _logits(cfg: ModelConfig, micro_batch: int, context: int = 1) -> int:
    """One chunk of float32 logits, its log-softmax and gradient (loss_chunk_size positions of
    this rank's span)."""
    return 3 * micro_batch * min(cfg.loss_chunk_size, cfg.seq_len // context) * N_BYTES * 4
