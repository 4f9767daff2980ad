"""The dry-run's memory and time estimate: its arithmetic, and the long-context recipes fit."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mbtrain.train.estimate import GIB, estimate_rank, state_bytes
from mbtrain.train.run_config import check_layout, load_config

REPO = Path(__file__).resolve().parents[2]


def est(recipe: str, world: int, *overrides: str, device: str = "cuda"):
    cfg = load_config(REPO / "recipes" / recipe, list(overrides))
    layout = check_layout(cfg, world)
    return estimate_rank(cfg.model, cfg.train, layout, device, peak_flops=1e15), cfg


def test_states_follow_the_zero_stage():
    n = 1_000_000
    assert state_bytes(n, "fp32", 0, 8) == (4 * n, 4 * n, 8 * n)
    assert state_bytes(n, "fp32", 2, 8) == (4 * n, n // 2, 12 * n // 8)
    assert state_bytes(n, "bf16", 1, 4) == (2 * n, 2 * n + n, 3 * n)
    w3, _, _ = state_bytes(n, "bf16", 3, 4)
    assert w3 == 2 * n // 4


def test_context_parallelism_divides_the_activations():
    plain = ("model.activation_checkpointing=false", "model.local_chunk=0", "parallel.tensor=2")
    one, _ = est("long_context_1m.yaml", 2, "parallel.context=1", *plain)
    four, _ = est("long_context_1m.yaml", 8, "parallel.context=4", *plain)
    ratio = four.activations.total / one.activations.total
    assert 0.2 < ratio < 0.35, ratio  # toward 1/4; the logits chunk is per rank
    assert four.params == one.params  # weights are replicated over the context axis


def test_checkpointing_saves_activation_memory():
    on, cfg = est("long_context_1m.yaml", 8)
    assert cfg.model.activation_checkpointing
    assert on.activations.total < on.activations_other.total / 3


@pytest.mark.parametrize(
    "recipe, world, memory",
    [
        ("long_context_1m.yaml", 8, "80"),
        ("long_context_4m.yaml", 8, "141"),
        ("long_context_16m.yaml", 32, "141"),
    ],
)
def test_long_context_recipes_fit_by_the_dry_run(recipe, world, memory, long_dataset):
    """Each long-context recipe's header command: the dry run accepts the layout, checks the
    data and fits the memory (the 16M one: 4 nodes x 8, tensor 2 x Ulysses 4 x ring 4)."""
    data = [f"data.train={long_dataset}/train", f"data.val={long_dataset}/val"]
    # the options first and the overrides after them, as the recipes' headers write it
    out = subprocess.run(
        [sys.executable, "-m", "mbtrain.cli.main", "train", str(REPO / "recipes" / recipe),
         "--dry-run", "--world-size", str(world), "--device-memory", memory, *data],
        capture_output=True, text=True,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"fits in {float(memory):.2f} GiB" in out.stdout, out.stdout
    assert "parallel" in out.stdout and "step time:" in out.stdout
    e, cfg = est(recipe, world)
    assert cfg.parallel.context > 1 and e.total < float(memory) * GIB
    if cfg.model.seq_len == 16 * 2**20:
        assert "(context: Ulysses 4 x ring 4)" in out.stdout
        assert "ring attention buffers" in out.stdout
        assert cfg.train.seq_len_schedule[-1][1] == cfg.model.seq_len


def test_kept_host_memory_is_counted_on_cpu_only():
    """Keeping freed memory grows a CPU process's peak past its live peak (fragmentation):
    the estimate adds KEPT_HEAP_FRACTION of the activations there, and nothing on a GPU."""
    from mbtrain.train.estimate import KEPT_HEAP_FRACTION

    kept, _ = est("tiny_cpu.yaml", 1, device="cpu")
    off, _ = est("tiny_cpu.yaml", 1, "train.keep_host_memory=false", device="cpu")
    gpu, _ = est("tiny_cpu.yaml", 1, device="cuda")
    assert kept.kept_heap == int(KEPT_HEAP_FRACTION * kept.activations.total) > 0
    assert kept.total - off.total == kept.kept_heap
    assert off.kept_heap == gpu.kept_heap == 0
