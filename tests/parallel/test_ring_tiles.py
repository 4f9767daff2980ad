"""Ring attention's document masks in tiles: a chunk pair that a document boundary crosses is
cut into tiles (at most `RingPlan.tile` positions a side), so the mask never grows with the
chunk (16 MiB on a ring of 4 inside Ulysses 4 would need 32 GiB as one mask). The tiles
must give exactly the attention of one dense masked call, values and gradients."""

from __future__ import annotations

import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from mbtrain.parallel.ring import RingAttention, RingPlan, _blocks

RING, CHUNK, HEADS, HEAD_DIM = 2, 8, 2, 4
K = 2 * RING * CHUNK  # positions of the whole sequence


def _segments() -> torch.Tensor:
    """Document ids of the K positions: boundaries inside chunks, one document spanning two
    chunks, and a one-position document."""
    lengths = [3, 11, 1, 9, 8]
    return torch.repeat_interleave(torch.arange(len(lengths)), torch.tensor(lengths))[None]


def _dense(q, k, v, segments):
    pos = torch.arange(K)
    allowed = (segments[0][:, None] == segments[0][None, :]) & (pos[None, :] <= pos[:, None])
    return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)


def _local(x: torch.Tensor, rank: int) -> torch.Tensor:
    """This ring rank's two zigzag chunks of a (B, H, K, hd) tensor."""
    a, b = rank, 2 * RING - 1 - rank
    return torch.cat(
        [x[:, :, a * CHUNK : (a + 1) * CHUNK], x[:, :, b * CHUNK : (b + 1) * CHUNK]], 2
    )


def _worker(rank: int, path: str, tile: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{path}", rank=rank, world_size=RING)
    torch.manual_seed(0)
    q, k, v, dout = (torch.randn(1, HEADS, K, HEAD_DIM, dtype=torch.float32) for _ in range(4))
    segments = _segments()
    ref_q, ref_k, ref_v = (t.clone().requires_grad_() for t in (q, k, v))
    ref = _dense(ref_q, ref_k, ref_v, segments)
    ref.backward(dout)
    plan = RingPlan(dist.group.WORLD, tuple(range(RING)), rank, segments, tile=tile)
    lq, lk, lv = (_local(t, rank).clone().requires_grad_() for t in (q, k, v))
    got = RingAttention.apply(lq, lk, lv, plan)
    got.backward(_local(dout, rank))
    diffs = [
        (got - _local(ref, rank)).abs().max().item(),
        (lq.grad - _local(ref_q.grad, rank)).abs().max().item(),
        (lk.grad - _local(ref_k.grad, rank)).abs().max().item(),
        (lv.grad - _local(ref_v.grad, rank)).abs().max().item(),
    ]
    torch.save(diffs, f"{out}.{rank}")
    dist.destroy_process_group()


@pytest.mark.parametrize("tile", [3, 4, 8192])
def test_tiled_document_masks_match_one_dense_call(tmp_path, tile):
    """Tiles of 3 (ragged at the chunk's end), 4 and one whole chunk: output and the query,
    key and value gradients equal dense masked attention (within 1e-5, float32) on both ring ranks."""
    out = str(tmp_path / "diffs")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    mp.spawn(_worker, args=(str(tmp_path / "store"), tile, out), nprocs=RING, join=True)
    for rank in range(RING):
        diffs = torch.load(f"{out}.{rank}")
        assert max(diffs) < 1e-5, (rank, diffs)


def test_masks_stay_within_a_tile_and_skip_what_no_query_sees():
    """No mask is larger than a tile; tiles inside one document carry none; tiles whose
    queries may see none of their keys are not computed at all."""
    segments = _segments()
    plan = RingPlan(None, (0, 1), 1, segments, tile=4)
    dense = RingPlan(None, (0, 1), 1, segments, tile=8192)
    for held in (0, 1):
        blocks = _blocks(plan, held, CHUNK, torch.float32)
        whole = _blocks(dense, held, CHUNK, torch.float32)
        assert all(b.bias is None or max(b.bias.shape[-2:]) <= 4 for b in blocks)
        assert len(blocks) >= len(whole)
    # Ring rank 1 holds chunks 1 and 2 (positions 8-15 in local 0-7, 16-23 in local 8-15).
    # Held by itself, chunk 2's queries (all document 3) against chunk 1's keys (documents
    # 1, 1, 1, 1 | 1, 1, 2, 3) in tiles of 4: keys 8-11 are seen by no query (skipped), keys
    # 12-15 by all (position 15, document 3: a masked tile).
    pairs = {(b.q.start, b.kv.start): b for b in _blocks(plan, 1, CHUNK, torch.float32)}
    assert (8, 0) not in pairs and (12, 0) not in pairs
    assert pairs[(8, 4)].bias is not None and pairs[(12, 4)].bias is not None
    # chunk 2 against itself lies inside document 3: one causal block, no mask
    assert pairs[(8, 8)].bias is None and pairs[(8, 8)].causal
