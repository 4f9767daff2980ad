"""The activation-memory model counts exactly what autograd saves (checked with
saved_tensors_hooks on the built model: every saved tensor, parameters excluded)."""

from __future__ import annotations

import pytest
import torch

from mbtrain.model import ModelConfig, build_model
from mbtrain.model.memory import activation_memory


def saved_bytes(model, x) -> int:
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen: dict[int, int] = {}

    def pack(t):
        st = t.untyped_storage()
        if st.data_ptr() not in params:
            seen[st.data_ptr()] = st.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model.loss(x)
    return sum(seen.values())


CASES = {
    "gelu": {},
    "rope": {"pos": "rope"},
    "swiglu": {"activation": "swiglu"},
    "deeper_wider": {"global_layers": 3, "global_dim": 32, "local_dim": 96, "local_layers": 1},
    "checkpointing": {"activation_checkpointing": True},
    "local_context": {"local_context": 8, "pos": "rope"},
    "chunked_local": {"activation_checkpointing": True, "local_chunk": 16},
    "patch16": {"patch_size": 16, "global_dim": 16},
    "transformer": {"arch": "transformer", "dim": 64, "layers": 2, "heads": 4},
    "transformer_ckpt": {
        "arch": "transformer",
        "dim": 64,
        "layers": 2,
        "heads": 4,
        "activation_checkpointing": True,
    },
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_saved_activations_match_the_model(name):
    cfg = ModelConfig.tiny(
        seq_len=512, patch_size=8, global_dim=16, local_dim=64, local_heads=4, loss_chunk_size=256
    )
    cfg = ModelConfig(**{**cfg.__dict__, **CASES[name]})
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.randint(0, 256, (2, cfg.seq_len))
    got = saved_bytes(model, x)
    est = activation_memory(cfg, micro_batch=2)
    kept = est.global_blocks + est.local_blocks + est.around
    assert kept == pytest.approx(got, rel=0.03), (kept, got)
