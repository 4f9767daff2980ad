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


def measure_matmul_flops(n: int = 1024, seconds: float = 0.5, dtype=torch.float32) -> float:
    a = torch.randn(n, n, dtype=dtype)
    b = torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def device_peak_flops(device: str, precision: str) -> float:
    if device == "cuda":
        name = torch.cuda.get_device_name()
        for key, peaks in GPU_PEAKS.items():
            if key in name:
                return peaks[precision]
        return 0.0
    return measure_matmul_flops(dtype=torch.float32 if precision == "fp32" else torch.bfloat16)
