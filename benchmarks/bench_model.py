"""Benchmark MegaByte against the byte-level baseline on this machine's CPU.

Measures, side by side at matched parameter count (about 3.6M, fp32):

* training bytes/s and peak process memory (max RSS) at T = 8,192 and 65,536 bytes;
* generation bytes/s at 8,192 bytes of context, with the KV-cached decoder and by
  recomputing the full forward pass for every byte. The cached decoder runs one thread:
  its ops are tiny, and on a shared 2-core machine a second OpenMP thread makes every op
  wait for a busy core (measured: ~15x slower). The recompute path uses --threads.

Every training case runs in its own subprocess, so that its max RSS is its own. The
baseline at T = 65,536 needs ~50 TFLOP per step (attention grows with T^2): on a 2-core CPU
that is most of an hour, so by default it is estimated from its FLOPs and the FLOP rate
measured at T = 8,192 (pass --full to run it).

    .venv/bin/python benchmarks/bench_model.py [--threads 2] [--full] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from mbtrain.model import ModelConfig, build_model, count_parameters, flops_per_byte, generate

MEGABYTE = dict(
    arch="megabyte",
    pos="rope",
    patch_size=8,
    global_dim=32,
    global_layers=4,
    global_heads=4,
    local_dim=128,
    local_layers=2,
    local_heads=4,
    dropout=0.0,
)
BASELINE = dict(arch="transformer", pos="rope", dim=272, layers=4, heads=4, dropout=0.0)
CONFIGS = {"megabyte": MEGABYTE, "transformer": BASELINE}
DECODE_THREADS = 1


def max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def train_case(arch: str, seq_len: int, steps: int, checkpointing: bool) -> dict:
    """One training measurement (run inside a fresh subprocess)."""
    cfg = ModelConfig(**CONFIGS[arch], seq_len=seq_len, activation_checkpointing=checkpointing)
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (1, seq_len))
    rss_before = max_rss_mib()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        model.loss(x).backward()
        opt.step()

    step()  # warm-up (allocations, optimizer state)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    # Best of the timed steps: the CPU is shared, and other jobs only ever slow a step down.
    dt = min(times)
    return {
        "arch": arch,
        "seq_len": seq_len,
        "params": count_parameters(cfg),
        "step_s": dt,
        "step_s_all": times,
        "bytes_per_s": seq_len / dt,
        "tflops_per_step": flops_per_byte(cfg) * seq_len / 1e12,
        "gflop_per_s": flops_per_byte(cfg) * seq_len / dt / 1e9,
        "rss_model_mib": rss_before,
        "peak_rss_mib": max_rss_mib(),
        "checkpointing": checkpointing,
    }


def generation_case(
    arch: str, context: int, cached_bytes: int, recompute_bytes: int, threads: int
) -> dict:
    """Decoding speed; the cached decoder runs on 1 thread (see the module docstring)."""
    cfg = ModelConfig(**CONFIGS[arch], seq_len=context)
    model = build_model(cfg).eval()
    prompt = torch.randint(0, 256, (1, context - cached_bytes - 1))

    # Cached: the prompt is prefilled once, then each byte costs one decoder step.
    torch.set_num_threads(DECODE_THREADS)
    cached = 0.0
    for _ in range(2):  # best of two: the CPU is shared
        it = generate(model, prompt[0], max_bytes=cached_bytes + 1, seed=0)
        next(it)  # prefill + first byte, not timed
        t0 = time.perf_counter()
        n = sum(1 for _ in it)
        cached = max(cached, n / (time.perf_counter() - t0))

    # Recompute: a full forward over the last `context` bytes for every new byte.
    torch.set_num_threads(threads)
    x = torch.randint(0, 256, (1, context))
    best = float("inf")
    with torch.no_grad():
        for _ in range(recompute_bytes):
            t0 = time.perf_counter()
            nxt = model(x)[:, -1].argmax(-1, keepdim=True)
            best = min(best, time.perf_counter() - t0)
            x = torch.cat([x[:, 1:], nxt], dim=1)
    recompute = 1.0 / best  # best single byte, as for the cached path's best run
    return {
        "arch": arch,
        "context": context,
        "cached_bytes_per_s": cached,
        "recompute_bytes_per_s": recompute,
        "speedup": cached / recompute,
        "cached_bytes": n,
        "recompute_bytes": recompute_bytes,
        "decode_threads": DECODE_THREADS,
        "recompute_threads": threads,
    }


def run_sub(args: list[str], threads: int) -> dict:
    cmd = [sys.executable, __file__, "--threads", str(threads), *args]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--full", action="store_true", help="also run the baseline at T=65,536")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results_model.md")))
    ap.add_argument(
        "--one", nargs=4, metavar=("ARCH", "T", "STEPS", "CKPT"), help=argparse.SUPPRESS
    )
    ap.add_argument("--gen", nargs=4, metavar=("ARCH", "CTX", "N", "R"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.one:
        arch, t, steps, ckpt = a.one
        print(json.dumps(train_case(arch, int(t), int(steps), ckpt == "1")))
        return
    if a.gen:
        arch, ctx, n, r = a.gen
        print(json.dumps(generation_case(arch, int(ctx), int(n), int(r), a.threads)))
        return

    train = []
    for arch, t, steps, ckpt in [
        ("megabyte", 8192, 5, "0"),
        ("transformer", 8192, 3, "0"),
        ("megabyte", 65536, 3, "0"),
        ("megabyte", 65536, 2, "1"),
    ]:
        train.append(run_sub(["--one", arch, str(t), str(steps), ckpt], a.threads))
        print(json.dumps(train[-1]), flush=True)
    if a.full:
        train.append(run_sub(["--one", "transformer", "65536", "1", "0"], a.threads))
    else:
        rate = next(r for r in train if r["arch"] == "transformer")["gflop_per_s"]
        cfg = ModelConfig(**BASELINE, seq_len=65536)
        step = flops_per_byte(cfg) * 65536 / 1e9 / rate
        train.append(
            {
                "arch": "transformer",
                "seq_len": 65536,
                "params": count_parameters(cfg),
                "step_s": step,
                "bytes_per_s": 65536 / step,
                "tflops_per_step": flops_per_byte(cfg) * 65536 / 1e12,
                "gflop_per_s": rate,
                "rss_model_mib": None,
                "peak_rss_mib": None,
                "checkpointing": False,
                "estimated": True,
            }
        )
    gen = []
    for arch, n, r in [("megabyte", 512, 4), ("transformer", 256, 3)]:
        gen.append(run_sub(["--gen", arch, "8192", str(n), str(r)], a.threads))
        print(json.dumps(gen[-1]), flush=True)
    write_report(Path(a.out), train, gen, a)


def write_report(path: Path, train: list[dict], gen: list[dict], a: argparse.Namespace) -> None:
    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    lines = [
        "# Model benchmark: MegaByte vs byte-level transformer (CPU)",
        "",
        f"- date: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {platform.processor() or platform.machine()}, {a.threads} torch threads, "
        f"torch {torch.__version__}, Python {platform.python_version()}; the CPU is shared with "
        "other engineers' jobs, so absolute numbers are noisy",
        f"- command: `.venv/bin/python benchmarks/bench_model.py --threads {a.threads}"
        + (" --full`" if a.full else "`"),
        f"- MegaByte: {MEGABYTE}",
        f"- baseline: {BASELINE}",
        "- fp32, batch 1, AdamW, `model.loss` (chunked head); AC = activation checkpointing;",
        "  step time = best of the timed steps after one warm-up step (the CPU is shared);",
        "  GFLOP/s counts attention in full (causal kernels do about half of it);",
        "  peak memory = max RSS of a fresh process per case (includes ~torch's own RSS,",
        "  shown as 'RSS after build').",
        "",
        "## Training",
        "",
        "| arch | T | AC | params | step (s) | bytes/s | model TFLOP/step | GFLOP/s | RSS after build (MiB) | peak RSS (MiB) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in train:
        mark = " (estimated from FLOPs)" if r.get("estimated") else ""
        lines.append(
            f"| {r['arch']}{mark} | {r['seq_len']:,} | {'yes' if r['checkpointing'] else 'no'} | "
            f"{r['params']:,} | {r['step_s']:.2f} | "
            f"{r['bytes_per_s']:,.0f} | {r['tflops_per_step']:.3f} | {r['gflop_per_s']:.1f} | "
            f"{fmt(r['rss_model_mib'], '.0f')} | {fmt(r['peak_rss_mib'], '.0f')} |"
        )
    lines += [
        "",
        "## Generation at 8,192 bytes of context",
        "",
        "| arch | KV-cached bytes/s (1 thread) | recompute bytes/s (--threads) | speed-up |",
        "|---|---|---|---|",
    ]
    for g in gen:
        lines.append(
            f"| {g['arch']} | {g['cached_bytes_per_s']:,.1f} ({g['cached_bytes']} bytes) | "
            f"{g['recompute_bytes_per_s']:.3f} ({g['recompute_bytes']} bytes) | "
            f"{g['speedup']:,.0f}x |"
        )
    lines.append("")
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
