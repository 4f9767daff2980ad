"""Session-wide fixtures: a tiny real dataset (Python stdlib sources) and the tiny recipe."""

from __future__ import annotations

import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "recipes" / "tiny_cpu.yaml"

# A tiny model on a tiny corpus: each run costs start-up time, not training time.
TINY_OVERRIDES = [
    "model.seq_len=128",
    "model.patch_size=8",
    "model.global_dim=16",
    "model.global_layers=2",
    "model.global_heads=2",
    "model.local_dim=32",
    "model.local_layers=1",
    "model.local_heads=2",
    "train.micro_batch_size=2",
    "train.log_every=1",
    "train.eval_batches=2",
    "train.sample_bytes=0",
    "train.eval_every=0",
    "optim.warmup_steps=2",
    "data.num_workers=0",
]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory) -> Path:
    """An MDS dataset (train/val) of a few hundred KB of real Python source, seq_len 128."""
    from mbtrain.data import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("data") / "tiny"
    stdlib = sysconfig.get_paths()["stdlib"]
    prepare(
        PrepareConfig(
            inputs=[f"{stdlib}/json/*.py", f"{stdlib}/email/*.py"],
            out=str(out),
            seq_len=128,
            val_fraction=0.2,
            progress=False,
        )
    )
    return out


@pytest.fixture(scope="session")
def long_dataset(tmp_path_factory) -> Path:
    """A dataset prepared at 16,777,216 bytes (the longest recipe's window; the shorter ones
    cut theirs from it): what a dry run of the long-context recipes checks against
    (`train --dry-run` checks the data too)."""
    from mbtrain.data import PrepareConfig, prepare

    out = tmp_path_factory.mktemp("data") / "long"
    stdlib = sysconfig.get_paths()["stdlib"]
    prepare(
        PrepareConfig(
            inputs=[f"{stdlib}/json/*.py", f"{stdlib}/email/*.py"],
            out=str(out),
            seq_len=16 * 1024 * 1024,
            size_limit=64 * 1024 * 1024,
            val_fraction=0.2,
            progress=False,
        )
    )
    return out


@pytest.fixture(scope="session")
def tiny_args(tiny_dataset) -> list[str]:
    """Recipe and overrides of a tiny training run on the tiny dataset (add run.dir=...)."""
    return [
        str(TINY_RECIPE),
        *TINY_OVERRIDES,
        f"data.train={tiny_dataset}/train",
        f"data.val={tiny_dataset}/val",
    ]
