"""Peak FLOP/s of one device, the denominator of model FLOPs utilisation (MFU).

GPUs: the vendor's dense peak for the precision. CPUs have no such table worth trusting, so
the peak is measured: a large fp32 matmul with all of this process's threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import time
from pathlib import Path

import torch

# Dense (no sparsity) peak FLOP/s per GPU, by name fragment and precision.
GPU_PEAKS = {
    "H200": {"bf16": 989e12, "fp32": 67e12},
    "H100": {"bf16": 989e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp32": 19.5e12},
    "L40S": {"bf16": 362e12, "fp32": 91.6e12},
    "A10G": {"bf16": 70e12, "fp32": 35e12},
}


def measure_matmul_flops(n: int = 2048, seconds: float = 1.0, dtype=torch.float32) -> float:
    """Peak FLOP/s of one large matmul: the best single run, not the mean.

    On a shared machine other processes steal time slices; the fastest of many runs is the
    closest to what the hardware can do, and a peak that is too low would report MFU > 1.
    """
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best


def measure_sustained_matmul_flops(
    n: int = 2048, seconds: float = 3.0, dtype=torch.float32
) -> float:
    """FLOP/s of n x n matmuls run back to back for `seconds`: the rate a loop of large
    matmuls keeps up, not the best single call.

    On a shared or power-limited CPU it sits well below `measure_matmul_flops` (117-144
    against 150-203 GFLOP/s on the benchmark machine), and a training loop, which never
    pauses between matmuls, can at best reach it.
    """
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        calls += 1
    return 2 * n**3 * calls / (time.perf_counter() - start)


def _cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "mbtrain" / "cpu_peak.json"


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read_cache(path: Path) -> dict[str, float]:
    """The cache's numeric entries; nothing if it is missing or corrupt."""
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(cache, dict):
        return {}
    return {k: float(v) for k, v in cache.items() if isinstance(v, (int, float))}


def cached_matmul_flops(n: int, seconds: float, dtype) -> float:
    """`measure_matmul_flops`, remembered per CPU model, thread count, torch and dtype.

    A full measurement takes `seconds` (1 s of every training start otherwise); with a cached
    value a short one (a fifth) runs and the best of both is kept, so a value measured under
    load is corrected by the next quiet start. The cache is best effort: an unwritable home
    only costs the full measurement.
    """
    key = f"{cpu_name()}|{torch.get_num_threads()} threads|torch {torch.__version__}|{dtype}|{n}"
    path = _cache_file()
    cached = _read_cache(path).get(key)
    measured = measure_matmul_flops(n, seconds / 5 if cached else seconds, dtype)
    best = max(measured, cached or 0.0)
    if best != cached:
        # Re-read just before replacing (atomically): keep what other ranks or hosts wrote.
        cache = _read_cache(path)
        cache[key] = max(best, cache.get(key, 0.0))
        with contextlib.suppress(OSError):
            _replace_json(path, cache)
    return best


def _replace_json(path: Path, obj: dict) -> None:
    """Write aside, then rename over `path`: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj))
    os.replace(tmp, path)


def device_peak_flops(device: str, precision: str) -> float:
    if device == "cuda":
        name = torch.cuda.get_device_name()
        for key, peaks in GPU_PEAKS.items():
            if key in name:
                return peaks[precision]
        return 0.0
    if precision == "fp32":
        return cached_matmul_flops(2048, 1.0, torch.float32)
    # CPUs without bf16 matrix units run bf16 matmuls ~100x slower: a small one suffices.
    return cached_matmul_flops(256, 0.3, torch.bfloat16)
