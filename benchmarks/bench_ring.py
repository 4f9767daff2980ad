"""Ring attention vs Ulysses vs no context parallelism, side by side in one run (CPU, gloo, fp32).

For each T: CP=1 (one process, 2 threads), Ulysses CP=2 (`parallel.context=2`: the heads are
exchanged by all-to-all) and ring CP=2 (`parallel.context=2 parallel.context_ring=2`: K/V blocks
travel round a ring, partial softmaxes merged by log-sum-exp), two processes of one thread each
on the same two cores. Per job: bytes/s over the timed steps after a warm-up step, the peak RSS
of the largest rank, and the dry-run's estimate (ring buffers included) beside it. The workers
are `benchmarks/bench_context.py`'s (same model, same random batches).

What two cores can show: the memory per rank (ring and Ulysses split the activations the same
way; ring keeps two K/V blocks in flight on top), and the cost of each exchange relative to the
compute. What they cannot: ring's reason to exist is a context axis larger than the head count
(Ulysses needs heads divisible by it) and overlap of the transfer with the block attention on
GPUs with NVLink; neither exists here.

    .venv/bin/python benchmarks/bench_ring.py [--steps 2] [--sizes 65536,262144,1048576]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.bench_context import MODEL, REPO, run_job

VARIANTS = [("CP=1", 1, 1), ("Ulysses CP=2", 2, 1), ("ring CP=2", 2, 2)]
# Beyond the model's 2 heads, which stop Ulysses at CP=2: 4 processes on the 2 cores (one
# thread each, oversubscribed: their bytes/s say little, their memory per rank is the point).
FOUR = [("ring CP=4", 4, 4), ("Ulysses 2 x ring 2 CP=4", 4, 2)]


def run(steps: int, sizes: list[int], four: list[int] | None = None) -> dict:
    rows = []
    jobs = [(t, v) for t in sizes for v in VARIANTS] + [(t, v) for t in four or [] for v in FOUR]
    with tempfile.TemporaryDirectory() as tmp:
        for seq_len, (label, context, ring) in jobs:
            r = run_job(context, seq_len, steps, Path(tmp), ring=ring)
            rows.append({"variant": label, "seq_len": seq_len, **r})
            print(f"{label} T={seq_len}: {r}", flush=True)
    return {"rows": rows, "steps": steps, "date": f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}"}


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def report(res: dict, command: str) -> str:
    import torch

    rows = res["rows"]
    lines = [
        "# Context parallelism on CPU: ring vs Ulysses vs none",
        "",
        f"- command: `{command}`",
        f"- date: {res['date']} UTC; machine: {platform.machine()}, {os.cpu_count()} CPU cores "
        f"(noisy), torch {torch.__version__}, gloo, fp32",
        f"- model: {' '.join(MODEL)}; one sequence per step; {res['steps']} timed steps after a "
        "warm-up; CP=1 = 1 process x 2 threads, CP=2 = 2 processes x 1 thread",
        "",
        "| variant | T (bytes) | load | step (s) | bytes/s | peak RSS / rank (MiB) "
        "| estimate (MiB) | estimate / measured |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['seq_len']:,} | {r['load']:.1f} | {r['step_s']:.2f} | "
            f"{r['bytes_per_s']:,.0f} | {_mib(r['peak_rss'])} | {_mib(r['estimate']['total'])} "
            f"| {r['estimate']['total'] / r['peak_rss']:.2f} |"
        )
    lines += [
        "",
        "| T (bytes) | Ulysses / CP=1 memory | ring / CP=1 memory | Ulysses / CP=1 bytes/s "
        "| ring / CP=1 bytes/s | ring / Ulysses bytes/s |",
        "|---|---|---|---|---|---|",
    ]
    four = [r for r in rows if r["variant"] in {v for v, _, _ in FOUR}]
    by = {(r["variant"], r["seq_len"]): r for r in rows}
    for t in sorted({r["seq_len"] for r in rows}):
        base, uly, ring = (by.get((v, t)) for v, _, _ in VARIANTS)
        if not (base and uly and ring):
            continue
        lines.append(
            f"| {t:,} | {uly['peak_rss'] / base['peak_rss']:.2f} | "
            f"{ring['peak_rss'] / base['peak_rss']:.2f} | "
            f"{uly['bytes_per_s'] / base['bytes_per_s']:.2f} | "
            f"{ring['bytes_per_s'] / base['bytes_per_s']:.2f} | "
            f"{ring['bytes_per_s'] / uly['bytes_per_s']:.2f} |"
        )
    if four:
        lines += ["", "| T (bytes) | variant (4 processes) | memory / CP=1 | memory / ring CP=2 |",
                  "|---|---|---|---|"]  # fmt: skip
        for r in four:
            base, ring2 = by.get(("CP=1", r["seq_len"])), by.get(("ring CP=2", r["seq_len"]))
            lines.append(
                f"| {r['seq_len']:,} | {r['variant']} | "
                + (f"{r['peak_rss'] / base['peak_rss']:.2f}" if base else "-")
                + " | "
                + (f"{r['peak_rss'] / ring2['peak_rss']:.2f}" if ring2 else "-")
                + " |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--sizes", default="65536,262144,1048576")
    ap.add_argument("--four", default="", help="sizes also run on 4 processes (ring 4, 2 x 2)")
    ap.add_argument("--add", action="store_true", help="add these rows to the JSON's rows")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results_ring.md"))
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results_ring.json"))
    args = ap.parse_args()
    sizes = [int(t) for t in args.sizes.split(",") if t]
    res = run(args.steps, sizes, [int(t) for t in args.four.split(",") if t])
    command = f".venv/bin/python -m benchmarks.bench_ring --steps {args.steps} --sizes {args.sizes}"
    command += f" --four {args.four}" if args.four else ""
    res["commands"] = [command]
    if args.add and Path(args.json).exists():  # a second run's rows beside the first's
        old = json.loads(Path(args.json).read_text())
        new = {(r["variant"], r["seq_len"]) for r in res["rows"]}
        kept = [r for r in old["rows"] if (r["variant"], r["seq_len"]) not in new]
        res["rows"] = kept + res["rows"]
        res["commands"] = [*old.get("commands", []), command]
        res["date"] = f"{old['date']} and {res['date']}"
    Path(args.json).write_text(json.dumps(res, indent=1))
    Path(args.out).write_text(report(res, "`, `".join(res["commands"])))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
