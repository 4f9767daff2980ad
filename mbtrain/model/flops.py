"""Analytic parameter and FLOP accounting, for MFU and for sizing runs before building them.

Conventions (those of PaLM's MFU appendix and of `torch.utils.flop_counter`):

* A matmul of (m, k) by (k, n) costs 2*m*k*n FLOPs. Norms, activations, softmax, embedding
  look-ups and the residual adds are not counted (they are a few percent and not matmuls).
* Attention scores and the weighted sum are counted in full, 2 * 2 * L_q * L_k * width per
  layer, though a causal kernel skips about half: MFU then compares against what a dense
  implementation would have had to do, which is the usual reporting convention.
* Training = 3 x forward (backward costs twice the forward); activation checkpointing's
  extra forward is not counted (it is recomputation, not model FLOPs).

For MegaByte with T bytes, P bytes per patch and K = T/P patches, per byte:

    global:  L_G * (2 * m_block(P*D_G) + 4 * K * P*D_G) / P
    g->l:    2 * D_G * D_L
    local:   L_L * (2 * m_block(D_L) + 4 * P * D_L)   (x (P+r)/P and (P+r)^2/P^2 with r
                                                   cross-patch context bytes)
    head:    2 * D_L * 256

where m_block(d) is the number of matmul weights of one block (4 d^2 + MLP). Dropping the
attention terms gives the paper's rule: about 2 * T * (m_global / P + m_local) forward FLOPs
per sequence, against 2 * T * m for a plain transformer of m parameters.
"""

from __future__ import annotations

from mbtrain.model.config import ModelConfig
from mbtrain.model.layers import mlp_hidden, norm_params

N_BYTES = 256


def block_matmul_params(cfg: ModelConfig, dim: int) -> int:
    """Weights of the linears of one block of width `dim` (attention + MLP)."""
    n_mlp = 3 if cfg.activation == "swiglu" else 2
    return 4 * dim * dim + n_mlp * dim * mlp_hidden(cfg, dim)


def block_params(cfg: ModelConfig, dim: int) -> int:
    """All parameters of one block: its linears and its two norms."""
    return block_matmul_params(cfg, dim) + 2 * norm_params(cfg, dim)


def count_parameters(cfg: ModelConfig) -> int:
    """Number of parameters of `build_model(cfg)` (tied weights counted once)."""
    learned = cfg.pos == "learned"
    if cfg.arch == "transformer":
        d = cfg.dim
        n = N_BYTES * d + d  # byte embedding, start vector
        n += cfg.seq_len * d if learned else 0
        n += cfg.layers * block_params(cfg, d) + norm_params(cfg, d)
        n += 0 if cfg.tie_local_embedding else N_BYTES * d
        return n
    p, d_g, d_l = cfg.patch_size, cfg.global_dim, cfg.local_dim
    w = p * d_g
    n = N_BYTES * d_g + w  # global byte embedding, pad patch
    n += cfg.seq_len * d_g if learned else 0
    n += cfg.global_layers * block_params(cfg, w) + norm_params(cfg, w)
    n += d_g * d_l  # global-to-local projection
    n += N_BYTES * d_l + d_l  # local byte embedding, local pad
    n += cfg.local_layers * block_params(cfg, d_l) + norm_params(cfg, d_l)
    n += 0 if cfg.tie_local_embedding else N_BYTES * d_l
    return n


def forward_flops_per_byte(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """Forward FLOPs per byte at sequence length `seq_len` (default cfg.seq_len)."""
    t = cfg.seq_len if seq_len is None else seq_len
    if cfg.arch == "transformer":
        d = cfg.dim
        per_layer = 2 * block_matmul_params(cfg, d) + 4 * t * d
        return float(cfg.layers * per_layer + 2 * d * N_BYTES)
    p, d_g, d_l = cfg.patch_size, cfg.global_dim, cfg.local_dim
    w = p * d_g
    k = -(-t // p)
    glob = cfg.global_layers * (2 * block_matmul_params(cfg, w) + 4 * k * w) / p
    n = p + cfg.local_context  # local sequence: the context bytes, then the patch
    loc = cfg.local_layers * (2 * block_matmul_params(cfg, d_l) * n + 4 * n * n * d_l) / p
    return float(glob + 2 * d_g * d_l + loc + 2 * d_l * N_BYTES)


def flops_per_byte(cfg: ModelConfig, training: bool = True, seq_len: int | None = None) -> float:
    """Model FLOPs per byte: forward only, or forward + backward (3x) when training."""
    fwd = forward_flops_per_byte(cfg, seq_len)
    return 3.0 * fwd if training else fwd


def paper_rule_flops(cfg: ModelConfig, seq_len: int | None = None) -> float:
    """The paper's approximation of forward FLOPs per sequence, 2T(m_global/P + m_local)."""
    t = cfg.seq_len if seq_len is None else seq_len
    if cfg.arch == "transformer":
        return 2.0 * t * cfg.layers * block_matmul_params(cfg, cfg.dim)
    m_global = cfg.global_layers * block_matmul_params(cfg, cfg.patch_size * cfg.global_dim)
    m_local = cfg.local_layers * block_matmul_params(cfg, cfg.local_dim)
    return 2.0 * t * (m_global / cfg.patch_size + m_local)
