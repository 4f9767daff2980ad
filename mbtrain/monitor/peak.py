"""Peak FLOP/s of one device, the denominator of model FLOPs utilisation (MFU).

GPUs: the vendor's dense peak for the precision. CPUs have no such table worth trusting, so
the peak is measured: a large fp32 matmul with all of this process's threads.
"""

from __future__ import annotations

import time

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


def device_peak_flops(device: str, precision: str) -> float:
    if device == "cuda":
        name = torch.cuda.get_device_name()
        for key, peaks in GPU_PEAKS.items():
            if key in name:
                return peaks[precision]
        return 0.0
    if precision == "fp32":
        return measure_matmul_flops()
    # CPUs without bf16 matrix units run bf16 matmuls ~100x slower: a small one suffices.
    return measure_matmul_flops(n=256, seconds=0.3, dtype=torch.bfloat16)
