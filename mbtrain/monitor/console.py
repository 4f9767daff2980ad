"""Human-readable console lines for the training log."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000:
            return f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def human_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def format_train_line(row: dict, total_steps: int) -> str:
    parts = [
        f"step {row['step']}/{total_steps}",
        f"loss {row['loss']:.4f}",
        f"bpb {row['bpb']:.3f}",
    ]
    parts.append(f"lr {row['lr']:.2e}")
    if row.get("grad_norm") is not None:
        parts.append(f"gnorm {row['grad_norm']:.3f}")
    parts.append(f"{human_bytes(row['bytes_per_s'])}/s")
    if row.get("mfu") is not None:
        parts.append(f"mfu {100 * row['mfu']:.1f}%")
    if row.get("mem_bytes"):
        parts.append(f"mem {human_bytes(row['mem_bytes'])}")
    parts.append(f"eta {human_duration(row.get('eta_s', 0))}")
    return " | ".join(parts)
