"""The CPU matmul peak (MFU's denominator) is measured once per machine and remembered."""

from __future__ import annotations

import json

import torch

from mbtrain.monitor import peak


def test_peak_is_cached_and_only_ever_raised(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    first = peak.cached_matmul_flops(128, 0.05, torch.float32)
    path = tmp_path / "mbtrain" / "cpu_peak.json"
    ((key, value),) = json.loads(path.read_text()).items()
    assert value == first > 0 and "threads" in key
    # A higher remembered value (a quieter earlier start) wins over a new, shorter measurement.
    path.write_text(json.dumps({key: first * 1000}))
    assert peak.cached_matmul_flops(128, 0.05, torch.float32) == first * 1000
    # Another shape is another key; the first one stays.
    peak.cached_matmul_flops(64, 0.05, torch.float32)
    assert len(json.loads(path.read_text())) == 2


def test_corrupt_or_unwritable_cache_only_costs_a_measurement(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = tmp_path / "mbtrain" / "cpu_peak.json"
    path.parent.mkdir()
    path.write_text("{not json")
    assert peak.cached_matmul_flops(64, 0.02, torch.float32) > 0
    assert json.loads(path.read_text())  # replaced by a valid cache
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))  # "directory" is a file: cannot write
    assert peak.cached_matmul_flops(64, 0.02, torch.float32) > 0
