"""Keep freed host memory in the process instead of returning it to the kernel (glibc only).

Why: glibc's malloc serves every block above its mmap threshold (128 KiB, rising by itself
to at most 32 MiB) with a fresh `mmap` and unmaps it on free, and trims the heap top above
its trim threshold. A training step allocates the same activations every step, so on a CPU
every large activation is page-faulted in again, step after step: 4 KiB at a time, each
fault a trip into the kernel (and, in a virtual machine, often into the hypervisor). On the
2-core benchmark machine a step of the small-width MegaByte (widths 512/256, T = 8,192) took
~210,000 page faults and 0.8 s of system time; with the thresholds raised it takes ~2,000
and 0.04 s, and elementwise ops (GELU, adds, norms) on 32 MiB tensors run 5x faster
(benchmarks/NOTES.md, "Host memory").

What it costs: freed memory stays in the process, so its resident size stays at its peak
instead of falling between steps; a training process reaches that peak every step anyway.
Blocks of `MMAP_THRESHOLD` and more are still mapped and unmapped as before.

Other allocators (jemalloc or tcmalloc in LD_PRELOAD, musl) keep their own policy: the
settings then touch only glibc's unused allocator, or nothing. A threshold the user set in
the environment (`MALLOC_MMAP_THRESHOLD_`, `MALLOC_TRIM_THRESHOLD_`) is left as it is.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

# mallopt parameters (glibc's malloc.h).
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 1 << 30
"""Blocks below 1 GiB come from the heap and are reused after they are freed."""
TRIM_THRESHOLD = (1 << 31) - 1
"""The heap top is returned to the kernel only when more than ~2 GiB of it are free (the
largest value mallopt takes: its argument is a C int)."""


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process (and the processes it forks).

    Returns True when the settings were applied, False where they do not apply (not Linux
    with glibc, or both thresholds already set in the environment)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    applied = False
    for env, param, value in (
        ("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        ("MALLOC_TRIM_THRESHOLD_", M_TRIM_THRESHOLD, TRIM_THRESHOLD),
    ):
        if env not in os.environ:
            applied = bool(mallopt(param, value)) or applied
    return applied
