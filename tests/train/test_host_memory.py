"""keep_freed_memory: a training step's activations stop being page-faulted in every step.

Each case runs in a fresh process: malloc's thresholds are per process and cannot be undone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.confstr("CS_GNU_LIBC_VERSION") is None,
    reason="glibc's malloc only",
)

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from mbtrain.train.host_memory import keep_freed_memory

    applied = keep_freed_memory() if sys.argv[1] == "keep" else None
    def step():
        # A 64 MiB activation, written then freed, as every training step does.
        torch.empty(16 * 1024 * 1024).fill_(1.0)
    for _ in range(8):  # the heap settles after a few steps
        step()
    faults = []
    for _ in range(10):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        step()
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    faults = sorted(faults)[5]  # median step: a rare step may still grow the heap
    print(json.dumps({"applied": applied, "faults": faults}))
    """
)


def run_child(mode: str, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_freed_activations_are_not_faulted_in_again():
    default = run_child("default")
    kept = run_child("keep")
    assert kept["applied"] is True
    # 64 MiB written per step: 16,384 pages of 4 KiB when each allocation is a fresh mapping.
    assert default["faults"] > 16384 // 2
    assert kept["faults"] < 16384 // 20


def test_thresholds_set_in_the_environment_are_left_alone():
    res = run_child("keep", MALLOC_MMAP_THRESHOLD_="131072", MALLOC_TRIM_THRESHOLD_="131072")
    assert res["applied"] is False
    # The user's own (small) threshold still maps every 64 MiB block afresh.
    assert res["faults"] > 16384 // 2


def test_on_by_default_and_can_be_turned_off():
    from mbtrain.train.run_config import load_config

    base = ["data.train=runs/x/train"]
    assert load_config(None, base).train.keep_host_memory is True
    off = load_config(None, [*base, "train.keep_host_memory=false"])
    assert off.train.keep_host_memory is False
