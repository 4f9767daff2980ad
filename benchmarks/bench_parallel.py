"""Benchmark tensor and pipeline parallelism on this machine (CPU, gloo, fp32).

Per case: training bytes/s over the whole job, peak process memory (max RSS) of the
largest rank, and the parameter bytes each rank holds (max over ranks). Cases (every one
trains the same global batch: 8 sequences of 1,024 bytes per step):

* TP=1 on 1 process, with 1 thread (the reference) and with 2 (the whole machine);
* TP=2 on 2 processes (1 thread each), local model split over the tensor ranks or replicated;
* PP=2 on 2 processes (4 micro-batches in the pipeline);
* DP=2 on 2 processes, for comparison;
* TP=4 on 4 processes (oversubscribed: 4 processes on 2 cores), for per-rank parameter
  memory only.

On a 2-core CPU these numbers show the communication overhead (gloo all-reduces through
shared memory, pipeline bubbles), not the speed-up tensor or pipeline parallelism buys on
GPUs; the per-rank parameter memory is what carries over.

Each case is a `torchrun` job that calls the library's StepRunner (`build_engine`,
`train_step`) on synthetic batches.

    .venv/bin/python benchmarks/bench_parallel.py [--steps 3] [--ab 3] [--out benchmarks/results_parallel.md]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODEL = [
    "model.seq_len=1024",
    "model.patch_size=8",
    "model.global_dim=64",  # global width 512
    "model.global_layers=4",
    "model.global_heads=8",
    "model.local_dim=128",
    "model.local_layers=2",
    "model.local_heads=4",
    "model.dropout=0.0",
]
CASES = [
    # name, processes, threads per process, overrides
    ("TP=1", 1, 1, ["train.grad_accum=4"]),
    ("TP=1", 1, 2, ["train.grad_accum=4"]),
    (
        "TP=2, local split",
        2,
        1,
        ["parallel.tensor=2", "parallel.split_local=true", "train.grad_accum=4"],
    ),
    (
        "TP=2, local replicated",
        2,
        1,
        ["parallel.tensor=2", "parallel.split_local=false", "train.grad_accum=4"],
    ),
    ("PP=2", 2, 1, ["parallel.pipeline=2", "model.doc_mask=false", "train.grad_accum=4"]),
    ("DP=2", 2, 1, ["train.grad_accum=2"]),
    ("TP=4 (4 procs on 2 cores)", 4, 1, ["parallel.tensor=4", "train.grad_accum=4"]),
]


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from mbtrain.train.run_config import load_config
    from mbtrain.train.runner import StepRunner

    torch.set_num_threads(args.threads)
    cfg = load_config(
        "recipes/tiny_cpu.yaml",
        [
            *MODEL,
            *json.loads(args.overrides),
            f"run.dir={args.run_dir}",
            "train.micro_batch_size=2",
        ],
    )
    tr = StepRunner(cfg)
    steps = args.steps + 1
    n = steps * cfg.train.grad_accum
    g = torch.Generator().manual_seed(tr.te.dp_rank)
    batches = [
        {
            "x": torch.randint(0, 256, (2, cfg.model.seq_len), generator=g),
            "mask": torch.ones(2, cfg.model.seq_len, dtype=torch.bool),
        }
        for _ in range(n)
    ]
    tr.feed(batches)
    tr.step()  # warm-up: first-call allocations, DeepSpeed's lazy state
    dist.barrier()
    t0 = time.perf_counter()
    nbytes = 0.0
    for _ in range(args.steps):
        nbytes += tr.step()["bytes"]
    dist.barrier()
    elapsed = time.perf_counter() - t0
    seen = set()
    param_bytes = 0
    for p in tr.te.engine.module.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            param_bytes += p.numel() * p.element_size()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stats = torch.tensor([param_bytes, rss], dtype=torch.float64)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)
    if dist.get_rank() == 0:
        Path(args.result).write_text(
            json.dumps(
                {
                    "bytes_per_s": nbytes / elapsed,
                    "step_s": elapsed / args.steps,
                    "param_bytes": stats[0].item(),
                    "peak_rss": stats[1].item(),
                }
            )
        )
    sys.stdout.flush()
    os._exit(0)


def run_case(
    name: str, procs: int, threads: int, overrides: list[str], steps: int, tmp: Path
) -> dict:
    result = tmp / f"{abs(hash(name))}.json"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={procs}",
        str(Path(__file__).resolve()),
        "--worker",
        "--threads",
        str(threads),
        "--steps",
        str(steps),
        "--overrides",
        json.dumps(overrides),
        "--result",
        str(result),
        "--run-dir",
        str(tmp / "run"),
    ]
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": str(REPO),
    }
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {**json.loads(result.read_text()), "load": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results_parallel.md"))
    ap.add_argument(
        "--ab",
        type=int,
        default=3,
        help="alternating runs of TP=2 with the local model split / replicated",
    )
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--overrides", default="[]", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    import tempfile

    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, procs, threads, overrides in CASES:
            r = run_case(name, procs, threads, overrides, args.steps, Path(tmp))
            rows.append((name, procs, threads, r))
            print(name, r, flush=True)
        # split_local: the machine's load drifts between cases, so alternate the two variants
        # and compare medians.
        ab: dict[str, list[float]] = {"split": [], "replicated": []}
        for _ in range(args.ab):
            for variant in ab:
                overrides = [
                    "parallel.tensor=2",
                    f"parallel.split_local={variant == 'split'}".lower(),
                ]
                r = run_case(
                    variant, 2, 1, [*overrides, "train.grad_accum=4"], args.steps, Path(tmp)
                )
                ab[variant].append(r["step_s"])
                print(variant, r, flush=True)
    base = rows[0][3]
    lines = [
        "# Parallelism benchmark: tensor and pipeline parallel on CPU",
        "",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other engineers' jobs: "
        f"numbers are noisy), torch {torch.__version__}, Python {platform.python_version()}, gloo, fp32",
        f"- command: `.venv/bin/python benchmarks/bench_parallel.py --steps {args.steps} --ab {args.ab}`",
        f"- model: tiny_cpu recipe with {' '.join(MODEL)}; global batch 8 x 1,024 bytes per step "
        "(micro-batch 2), ZeRO-0, AdamW; timings over the steps after one warm-up step",
        "- **CPU numbers show communication overhead, not speed-up**: two processes share the two cores "
        "the single process uses alone, and every TP all-reduce / PP send goes through gloo.",
        "- load: the machine's 1-minute load average when the case started (other jobs share the CPU)",
        "",
        "| case | processes x threads | load | step (s) | bytes/s | vs TP=1 | params per rank (MiB) "
        "| peak RSS per rank (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, procs, threads, r in rows:
        lines.append(
            f"| {name} | {procs} x {threads} | {r['load']:.1f} | {r['step_s']:.2f} | {r['bytes_per_s']:,.0f} | "
            f"{r['bytes_per_s'] / base['bytes_per_s']:.2f}x | {r['param_bytes'] / 2**20:.2f} | {r['peak_rss'] / 2**20:.0f} |"
        )
    if args.ab:
        import statistics

        med = {k: statistics.median(v) for k, v in ab.items()}
        lines += [
            "",
            f"## TP=2: local model split over the tensor ranks vs replicated ({args.ab} alternating runs each)",
            "",
            "| local model | step times (s) | median (s) |",
            "|---|---|---|",
            *(
                f"| {k} | {', '.join(f'{t:.2f}' for t in v)} | {med[k]:.2f} |"
                for k, v in ab.items()
            ),
        ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
