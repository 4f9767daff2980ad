"""Layouts that cannot work fail at config time, before any process group exists."""

from __future__ import annotations

import pytest

from mbtrain.errors import ConfigError
from mbtrain.train.run_config import check_layout, load_config


def _cfg(*overrides: str):
    pipeline = any(o.startswith("parallel.pipeline=") and not o.endswith("=1") for o in overrides)
    extra = ["model.doc_mask=false"] if pipeline else []  # not with a pipeline
    return load_config("recipes/tiny_cpu.yaml", [*overrides, *extra])


def test_heads_not_divisible_by_tensor():
    with pytest.raises(
        ConfigError, match=r"heads \(4\) must be divisible by parallel.tensor \(8\)"
    ):
        check_layout(_cfg("parallel.tensor=8"), 8)


def test_layers_not_divisible_by_stages():
    with pytest.raises(
        ConfigError, match=r"layers \(2\) must be divisible by parallel.pipeline \(4\)"
    ):
        check_layout(_cfg("parallel.pipeline=4"), 4)


def test_zero3_with_pipeline():
    with pytest.raises(ConfigError, match="zero_stage"):
        _cfg("parallel.pipeline=2", "parallel.zero_stage=3")


def test_world_not_divisible_by_model_parallel():
    with pytest.raises(ConfigError, match="does not divide the world size"):
        check_layout(_cfg("parallel.tensor=2", "parallel.pipeline=2"), 6)


def test_valid_layout_arithmetic():
    layout = check_layout(_cfg("parallel.tensor=2", "parallel.pipeline=2"), 8)
    assert (layout.tensor, layout.pipeline, layout.data) == (2, 2, 2)


def test_sharded_parameter_names():
    from mbtrain.parallel.pipeline import plain_name
    from mbtrain.parallel.tensor import partition_dim_of

    assert partition_dim_of("global_model.blocks.3.attn.q_proj.weight") == 0
    assert partition_dim_of("model.global_model.blocks.0.mlp.gate_proj.weight") == 0
    assert partition_dim_of("global_model.blocks.1.attn.out_proj.weight") == 1
    assert partition_dim_of("global_model.blocks.1.mlp.down_proj.weight") == 1
    # The local model is never sharded (split_local splits its rows, not its weights).
    assert partition_dim_of("local_model.blocks.0.attn.q_proj.weight") is None
    assert plain_name("0.global_pad", 4) == "global_pad"
    assert plain_name("2.attn.q_proj.weight", 4) == "global_model.blocks.1.attn.q_proj.weight"
    assert plain_name("5.final_norm.weight", 4) == "global_model.norm.weight"
    assert (
        plain_name("5.local_model.blocks.0.mlp.up_proj.weight", 4)
        == "local_model.blocks.0.mlp.up_proj.weight"
    )


def test_layout_keys_of_older_checkpoints():
    """A marker without a key was saved by a layout without that axis (size 1)."""
    from mbtrain.parallel.layout import ParallelLayout

    layout = ParallelLayout(world_size=2, tensor=2)
    old = {"tensor": 2, "pipeline": 1, "data": 1, "zero_stage": 0}
    assert not layout.differs_from(old)
    assert not layout.differs_from({"tensor": 2})
    assert layout.differs_from({**old, "zero_stage": 1})
    assert "tensor 2" in ParallelLayout.describe_saved(old)


def test_context_parallel_layout_errors():
    """tiny_cpu: seq_len 512, patch 8 (K = 64), 4 global heads, 2 global layers."""
    with pytest.raises(ConfigError) as e:
        check_layout(_cfg("parallel.context=2", "parallel.pipeline=2"), 4)
    assert "parallel.context (2) with parallel.pipeline (2) is not supported" in str(e.value)
    with pytest.raises(
        ConfigError, match=r"must divide K = model.seq_len / model.patch_size \(64\)"
    ):
        check_layout(_cfg("parallel.context=3"), 3)
    with pytest.raises(ConfigError, match=r"heads per tensor rank \(4 / parallel.tensor 2 = 2\)"):
        check_layout(_cfg("parallel.context=4", "parallel.tensor=2"), 8)
    with pytest.raises(ConfigError, match=r"parallel.context: must be >= 1"):
        _cfg("parallel.context=0")
    layout = check_layout(_cfg("parallel.context=2", "parallel.tensor=2"), 8)
    assert (layout.context, layout.tensor, layout.data) == (2, 2, 2)
    assert layout.ranks_per_sample == 4 and layout.weight_shards == 2
    assert layout.marker()["context"] == 2
    assert not layout.differs_from({**layout.marker()})
    # A checkpoint without the key was saved without context parallelism.
    assert layout.differs_from({k: v for k, v in layout.marker().items() if k != "context"})


def test_document_masking_with_a_pipeline_is_refused():
    with pytest.raises(ConfigError, match=r"model.doc_mask: .* set model.doc_mask=false"):
        check_layout(load_config("recipes/tiny_cpu.yaml", ["parallel.pipeline=2"]), 2)


def test_context_beyond_the_head_count_needs_a_ring():
    """16 global heads, tensor 2: Ulysses alone stops at 8 context ranks; with a ring covering
    the rest, context 64 (Ulysses 8 x ring 8) is accepted, and the refusals say which
    context_ring values would work."""
    big = ["model.global_heads=16", "model.global_dim=64", "model.seq_len=16384",
           "parallel.tensor=2"]  # fmt: skip
    with pytest.raises(ConfigError, match=r"valid context_ring for this context: 8, 16, 32, 64"):
        check_layout(_cfg(*big, "parallel.context=64"), 128)
    layout = check_layout(_cfg(*big, "parallel.context=64", "parallel.context_ring=8"), 128)
    assert (layout.context, layout.ulysses, layout.context_ring) == (64, 8, 8)
    assert "Ulysses 8 x ring 8" in layout.describe()
    with pytest.raises(ConfigError, match=r"context_ring: must divide parallel.context \(64\)"):
        _cfg(*big, "parallel.context=64", "parallel.context_ring=3")


def test_ring_needs_two_chunks_per_rank_and_no_attention_dropout():
    # K = 512 / 8 = 64 positions: ring 64 would need 128 chunks.
    with pytest.raises(ConfigError, match="into 2 x context equal chunks"):
        check_layout(_cfg("parallel.context=64", "parallel.context_ring=64",
                          "model.global_heads=4"), 64)  # fmt: skip
    with pytest.raises(ConfigError, match="attention dropout is not supported across ring"):
        check_layout(_cfg("parallel.context=2", "parallel.context_ring=2", "model.dropout=0.1"), 2)
