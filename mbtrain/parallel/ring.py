"""Ring attention: the keys and values of a sequence's chunks passed around the ring ranks.

With `parallel.context_ring = R`, the sequence of K global positions is cut into 2R chunks of
c = K / 2R positions, and ring rank r holds chunks r and 2R-1-r (zigzag, or head-tail: an
early chunk and a late one). Causal attention makes early chunks cheap and late ones dear;
each rank holding one of each makes every rank's work the same at every step: at its own step
a rank computes two causal diagonal blocks and one full block, at every other step exactly two
full blocks (a chunk attends to a chunk wholly before it in full, to itself causally, to a
later one not at all).

Each of R steps attends this rank's queries to one rank's keys and values with a kernel that
also returns the softmax's log-sum-exp (LSE) per query, and merges the partial outputs by their
LSE (the online softmax): the result is exact attention over the whole sequence. While a step
computes, the next chunk pair is already in flight (send to the next ring rank, receive from
the previous). The backward pass runs the ring again with the final output and LSE, which is
all the attention kernel's backward needs per block (FlashAttention's decomposition), and the
key and value gradients travel with their blocks back to their owners.

Document masking: every rank has the whole sequence's document ids, so each block's mask is
computed locally; a block inside one document needs none (the usual case for long documents).
A block across a boundary is cut into tiles of at most `MASK_TILE` x `MASK_TILE` positions
(c is 131,072 patches for 16 MiB on a ring of 4 inside Ulysses 4: one dense c x c mask would
be 32 GiB), each merged by its LSE like a block: a tile wholly inside one document needs no
mask, a tile with no allowed key is skipped, only the tiles that a boundary crosses get an
additive mask. Rows of a tile with no allowed key get an LSE of -inf, so they weigh nothing
in the merge.

Kernels: on CPU `aten._scaled_dot_product_flash_attention_for_cpu` (and its backward), which
return and take the LSE; on CUDA the memory-efficient kernel (fp32 and bf16, additive masks),
which has not run on a GPU here. Attention dropout is not supported across ring blocks (refused
by the layout checks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from mbtrain.model.memory import RING_MASK_TILE

MASK_TILE = RING_MASK_TILE
"""Largest tile of a block that a document boundary crosses (the estimate counts its mask)."""


@dataclass(frozen=True)
class RingPlan:
    """Where this rank sits in the ring, and what one call needs."""

    group: Any
    """The ring's process group."""
    ranks: tuple[int, ...]
    """Global ranks of the ring, in ring order."""
    rank: int
    """This rank's index in the ring."""
    segments: Tensor | None = None
    """(B, K) document id of every global position (whole sequence), or None."""
    tile: int = MASK_TILE
    """Tile size of blocks that need a document mask."""

    @property
    def size(self) -> int:
        return len(self.ranks)

    def chunks(self, ring_rank: int) -> tuple[int, int]:
        """Indices of the two chunks ring rank `ring_rank` holds (zigzag)."""
        return ring_rank, 2 * self.size - 1 - ring_rank


# -- kernels that return the log-sum-exp -----------------------------------------------------


def _attend(q: Tensor, k: Tensor, v: Tensor, causal: bool, bias: Tensor | None):
    """(out, lse) of softmax attention on (B, H, L, hd) tensors; lse (B, H, Lq) float32."""
    if q.device.type == "cuda":
        out, lse, _, _ = torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, bias, True, 0.0, causal
        )
        return out, lse[..., : q.shape[2]].float()
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
        q, k, v, 0.0, causal, attn_mask=bias
    )
    return out, lse.float()


def _attend_backward(dout, q, k, v, out, lse, causal: bool, bias: Tensor | None):
    """(dq, dk, dv) of one block, given the whole attention's output and LSE."""
    if q.device.type == "cuda":
        zero = torch.zeros((), dtype=torch.int64, device=q.device)
        dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            dout,
            q,
            k,
            v,
            bias,
            out,
            lse.contiguous(),
            zero,
            zero,
            0.0,
            [True, True, True, False],
            causal,
        )
        return dq, dk, dv
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        dout, q, k, v, out, lse.contiguous(), 0.0, causal, attn_mask=bias
    )


# -- the blocks of one step --------------------------------------------------------------------


@dataclass
class _Block:
    q: slice
    """This rank's query positions (in its local [chunk A, chunk B] order)."""
    kv: slice
    """The held key/value positions."""
    causal: bool
    bias: Tensor | None
    """Additive (B, 1, c, c) mask, or None."""
    empty_rows: Tensor | None
    """(B, 1, c) True where a query row has no allowed key in this block."""


def _blocks(plan: RingPlan, held: int, c: int, dtype: torch.dtype) -> list[_Block]:
    """The (query, key) position ranges to compute when holding ring rank `held`'s keys:
    whole chunk pairs, or the tiles of a pair that a document boundary crosses."""
    out = []
    for a, qi in enumerate(plan.chunks(plan.rank)):
        for b, ki in enumerate(plan.chunks(held)):
            if ki > qi:
                continue  # a later chunk: causally invisible
            causal = ki == qi
            sq = sk = None
            if plan.segments is not None:
                sq = plan.segments[:, qi * c : (qi + 1) * c]  # (B, c)
                sk = plan.segments[:, ki * c : (ki + 1) * c]
            whole = sq is None or _one_document(sq, sk)
            tile = c if whole else max(1, min(plan.tile, c))
            for q0 in range(0, c, tile):
                for k0 in range(0, c, tile):
                    if causal and k0 > q0:
                        continue  # tiles above the diagonal: later keys
                    mask = _tile_mask(sq, sk, q0, k0, tile, causal and k0 == q0, dtype)
                    if mask is None:
                        continue
                    q = slice(a * c + q0, a * c + min(q0 + tile, c))
                    kv = slice(b * c + k0, b * c + min(k0 + tile, c))
                    out.append(_Block(q, kv, *mask))
    return out


def _tile_mask(sq, sk, q0: int, k0: int, tile: int, diagonal: bool, dtype):
    """(causal, additive mask, rows without keys) of one tile of a chunk pair, or None when no
    query may see any key in it. Without document ids, or inside one document, causal on the
    diagonal is the whole mask."""
    if sq is None:
        return diagonal, None, None
    tq, tk = sq[:, q0 : q0 + tile], sk[:, k0 : k0 + tile]
    if _one_document(tq, tk):
        return diagonal, None, None
    allowed = tq[:, :, None] == tk[:, None, :]  # (B, tile, tile)
    if diagonal:
        allowed &= torch.ones(allowed.shape[1:], dtype=torch.bool, device=tq.device).tril()
    if not bool(allowed.any()):
        return None
    bias = _empty_bias(allowed.shape, dtype, tq.device)
    bias.copy_(torch.zeros((), dtype=dtype, device=tq.device).masked_fill(~allowed, float("-inf")))
    # the mask holds the causal part too
    return False, bias[:, None], ~allowed.any(-1)[:, None]


def _empty_bias(shape: torch.Size, dtype: torch.dtype, device: torch.device) -> Tensor:
    """(B, q, k) storage for an additive mask. CUDA's memory-efficient kernel wants the key
    axis's stride a multiple of 16 elements: a ragged tile gets a padded row, viewed to k (what
    `F.scaled_dot_product_attention` does itself before calling that kernel)."""
    if device.type != "cuda" or shape[-1] % 16 == 0:
        return torch.empty(shape, dtype=dtype, device=device)
    padded = -(-shape[-1] // 16) * 16
    return torch.empty((*shape[:-1], padded), dtype=dtype, device=device)[..., : shape[-1]]


def _one_document(sq: Tensor, sk: Tensor) -> bool:
    """Every query and key position in the same document (per sequence): no mask needed."""
    first = sq[:, :1]
    return bool((sq == first).all() and (sk == first).all())


def _merge(acc_out, acc_lse, out, lse):
    """Online-softmax merge of a partial (out, lse) into the accumulators (float32)."""
    new = torch.logaddexp(acc_lse, lse)
    new_safe = torch.where(torch.isinf(new), torch.zeros_like(new), new)
    w_acc = torch.exp(acc_lse - new_safe).nan_to_num(0.0)
    w_new = torch.exp(lse - new_safe).nan_to_num(0.0)
    return acc_out * w_acc[..., None] + out.float() * w_new[..., None], new


# -- communication -------------------------------------------------------------------------------


def _shift(tensor: Tensor, plan: RingPlan) -> tuple[Tensor, list]:
    """Start sending `tensor` to the next ring rank and receiving the previous one's."""
    nxt = plan.ranks[(plan.rank + 1) % plan.size]
    prev = plan.ranks[(plan.rank - 1) % plan.size]
    buf = torch.empty_like(tensor)
    ops = [
        dist.P2POp(dist.isend, tensor.contiguous(), nxt, plan.group),
        dist.P2POp(dist.irecv, buf, prev, plan.group),
    ]
    return buf, dist.batch_isend_irecv(ops)


def _wait(reqs: list) -> None:
    for r in reqs:
        r.wait()


class RingAttention(torch.autograd.Function):
    """Causal attention of this rank's two chunks against the whole sequence (B, H, 2c, hd)."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, plan: RingPlan) -> Tensor:
        c = q.shape[2] // 2
        acc = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        lse = torch.full(q.shape[:3], float("-inf"), dtype=torch.float32, device=q.device)
        kv = torch.stack([k, v])
        for step in range(plan.size):
            held = (plan.rank - step) % plan.size
            nxt, reqs = _shift(kv, plan) if step < plan.size - 1 else (None, [])
            for blk in _blocks(plan, held, c, q.dtype):
                out_b, lse_b = _attend(
                    q[:, :, blk.q], kv[0][:, :, blk.kv], kv[1][:, :, blk.kv], blk.causal, blk.bias
                )
                if blk.empty_rows is not None:
                    lse_b = lse_b.masked_fill(blk.empty_rows, float("-inf"))
                acc[:, :, blk.q], lse[:, :, blk.q] = _merge(
                    acc[:, :, blk.q], lse[:, :, blk.q], out_b, lse_b
                )
            _wait(reqs)
            if nxt is not None:
                kv = nxt
        out = acc.to(q.dtype)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan = plan
        return out

    @staticmethod
    def backward(ctx, dout: Tensor):
        q, k, v, out, lse = ctx.saved_tensors
        plan: RingPlan = ctx.plan
        c = q.shape[2] // 2
        dout = dout.contiguous()
        dq = torch.zeros(q.shape, dtype=torch.float32, device=q.device)
        kv = torch.stack([k, v])
        dkv = torch.zeros(kv.shape, dtype=torch.float32, device=q.device)
        for step in range(plan.size):
            held = (plan.rank - step) % plan.size
            nxt, reqs = _shift(kv, plan) if step < plan.size - 1 else (None, [])
            for blk in _blocks(plan, held, c, q.dtype):
                # A row with no key in this block gets nothing from it: its probabilities are
                # exp(-inf - lse) = 0 under the additive mask.
                dq_b, dk_b, dv_b = _attend_backward(
                    dout[:, :, blk.q], q[:, :, blk.q], kv[0][:, :, blk.kv], kv[1][:, :, blk.kv],
                    out[:, :, blk.q], lse[:, :, blk.q], blk.causal, blk.bias,
                )  # fmt: skip
                dq[:, :, blk.q] += dq_b.float()
                dkv[0][:, :, blk.kv] += dk_b.float()
                dkv[1][:, :, blk.kv] += dv_b.float()
            # The key/value gradients travel with their blocks; after the last step each
            # rank holds its successor's, complete: one more shift returns them home.
            dkv_next, dreqs = _shift(dkv, plan)
            _wait(reqs)
            _wait(dreqs)
            dkv = dkv_next
            if nxt is not None:
                kv = nxt
        return dq.to(q.dtype), dkv[0].to(k.dtype), dkv[1].to(v.dtype), None
