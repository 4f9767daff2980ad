"""Context parallelism on this machine (CPU, gloo, fp32): memory per rank and bytes/s, CP=1 vs CP=2.

For T = 64K and 256K bytes, and for the largest T that the dry-run estimator puts under a
fixed memory cap per rank (`--cap-gib`) for each CP size, one training job per (CP, T):
CP=1 is one process with 2 threads, CP=2 two processes with 1 thread each (the same two
cores). Per job: bytes/s over the timed steps after one warm-up step, the peak RSS of the
largest rank, the RSS after the engine was built (framework + weights), and the dry-run's
estimate of the same run (`mbtrain.train.estimate`, the numbers `train --dry-run` prints)
beside the measured peak.

On two cores CP=2 cannot be faster (the same cores, plus all-to-alls through gloo); what it
shows is that a rank's memory falls toward 1/CP of the CP=1 memory as T grows (activations
dominate and split; weights and the framework do not), and what the exchange costs.

    .venv/bin/python benchmarks/bench_context.py [--steps 2] [--cap-gib 3] [--out benchmarks/results_context.md]
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
    "model.patch_size=16",
    "model.global_dim=8",  # global width 128
    "model.global_layers=2",
    "model.global_heads=2",
    "model.local_dim=32",
    "model.local_layers=1",
    "model.local_heads=2",
    "model.pos=rope",
    "model.dropout=0.0",
    "model.loss_chunk_size=65536",
]
SIZES = [65536, 262144, 1048576]


def overrides(seq_len: int, context: int, ring: int = 1) -> list[str]:
    return [
        *MODEL,
        f"model.seq_len={seq_len}",
        f"parallel.context={context}",
        f"parallel.context_ring={ring}",
        "train.micro_batch_size=1",
        "train.grad_accum=1",
        "train.precision=fp32",
        "train.device=cpu",
    ]


def estimate(seq_len: int, context: int, ring: int = 1) -> dict:
    from mbtrain.train.estimate import estimate_rank
    from mbtrain.train.run_config import check_layout, load_config

    cfg = load_config(REPO / "recipes" / "tiny_cpu.yaml", overrides(seq_len, context, ring))
    layout = check_layout(cfg, context)
    est = estimate_rank(cfg.model, cfg.train, layout, "cpu")
    return {
        "total": est.total,
        "states": est.states,
        "activations": est.activations.total,
        "framework": est.framework,
    }


def largest_under(cap: int, context: int, step: int = 65536) -> int:
    seq_len = step
    while estimate(seq_len + step, context)["total"] <= cap:
        seq_len += step
    return seq_len


def worker(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    from mbtrain.train.run_config import load_config
    from mbtrain.train.runner import StepRunner

    torch.set_num_threads(args.threads)
    cfg = load_config(
        REPO / "recipes" / "tiny_cpu.yaml",
        [*overrides(args.seq_len, args.context, args.ring), f"run.dir={args.run_dir}"],
    )
    tr = StepRunner(cfg)
    g = torch.Generator().manual_seed(0)
    t = cfg.model.seq_len
    batches = [
        {
            "x": torch.randint(0, 256, (1, t), generator=g),
            "mask": torch.ones(1, t, dtype=torch.bool),
        }
        for _ in range(args.steps + 1)
    ]
    tr.feed(batches)
    built = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    tr.step()  # warm-up: first-call allocations, Adam's state
    dist.barrier()
    t0 = time.perf_counter()
    nbytes = sum(tr.step()["bytes"] for _ in range(args.steps))
    dist.barrier()
    elapsed = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    stats = torch.tensor([rss, built], dtype=torch.float64)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)
    if dist.get_rank() == 0:
        Path(args.result).write_text(
            json.dumps(
                {
                    "bytes_per_s": nbytes / elapsed,
                    "step_s": elapsed / args.steps,
                    "peak_rss": stats[0].item(),
                    "built_rss": stats[1].item(),
                }
            )
        )
    sys.stdout.flush()
    os._exit(0)


def run_job(context: int, seq_len: int, steps: int, tmp: Path, ring: int = 1) -> dict:
    result = tmp / f"cp{context}-ring{ring}-{seq_len}.json"
    threads = max(1, 2 // context)  # 4 processes on 2 cores: one thread each, oversubscribed
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={context}", str(Path(__file__).resolve()), "--worker",
        "--threads", str(threads), "--steps", str(steps), "--seq-len", str(seq_len),
        "--context", str(context), "--ring", str(ring), "--result", str(result),
        "--run-dir", str(tmp / "run"),
    ]  # fmt: skip
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": str(REPO),
    }
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(
            f"CP={context} T={seq_len} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    est = estimate(seq_len, context, ring)
    return {**json.loads(result.read_text()), "load": load, "estimate": est}


def paired_sizes(rows: list[dict]) -> list[int]:
    """Sequence lengths measured at both CP=1 and CP=2 (the ratio rows)."""
    have = {(r["context"], r["seq_len"]) for r in rows}
    return sorted({t for c, t in have if (1, t) in have and (2, t) in have})


def run(steps: int = 2, cap_gib: float = 3.0, sizes: list[int] | None = None,
        search: bool = True) -> dict:  # fmt: skip
    import tempfile

    cap = int(cap_gib * 2**30)
    plan = [(c, t) for t in (sizes or SIZES) for c in (1, 2)]
    # the largest-T search (dry-run estimates) only where its runs are part of the plan
    largest = {c: largest_under(cap, c) for c in (1, 2)} if search else {}
    plan += [(c, t) for c, t in largest.items()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for context, seq_len in plan:
            r = run_job(context, seq_len, steps, Path(tmp))
            rows.append({"context": context, "seq_len": seq_len, **r})
            print(f"CP={context} T={seq_len}: {r}", flush=True)
    date = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M}"
    return {"rows": rows, "cap": cap, "largest": largest, "steps": steps, "date": date}


def _mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def report(res: dict, command: str) -> str:
    import torch

    rows = res["rows"]
    largest = {int(k): v for k, v in res["largest"].items()}  # JSON keys come back as strings
    by = {(r["context"], r["seq_len"]): r for r in rows}
    lines = [
        "# Context parallelism on CPU: memory per rank and throughput, CP=1 vs CP=2",
        "",
        f"- command: `{command}`",
        # The date of the measurement (reports rebuilt later from kept results keep it).
        f"- date: {res.get('date') or f'{datetime.now(timezone.utc):%Y-%m-%d %H:%M}'} UTC; "
        f"machine: {platform.machine()}, "
        f"{os.cpu_count()} CPU cores shared with other jobs (noisy), torch {torch.__version__}, gloo, fp32",
        f"- model: {' '.join(MODEL)}; one sequence per step; {res['steps']} timed steps after a "
        "warm-up; CP=1 = 1 process x 2 threads, CP=2 = 2 processes x 1 thread",
        f"- cap: {res['cap'] / 2**30:.1f} GiB per rank; largest T under it by the dry-run estimate: "
        f"CP=1 {largest[1]:,}, CP=2 {largest[2]:,}",
        "- estimate: `mbtrain.train.estimate` (what `train --dry-run` prints) for the same run; "
        "measured = peak RSS of the largest rank",
        "",
        "| CP | T (bytes) | load | step (s) | bytes/s | peak RSS / rank (MiB) | after build (MiB) "
        "| estimate (MiB) | estimate / measured |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["estimate"]["total"] / r["peak_rss"]
        lines.append(
            f"| {r['context']} | {r['seq_len']:,} | {r['load']:.1f} | {r['step_s']:.2f} | "
            f"{r['bytes_per_s']:,.0f} | {_mib(r['peak_rss'])} | {_mib(r['built_rss'])} | "
            f"{_mib(r['estimate']['total'])} | {ratio:.2f} |"
        )
    lines += [
        "",
        "| T (bytes) | CP=2 / CP=1 memory per rank | the same above the built engine | "
        "estimate of it | CP=2 / CP=1 bytes/s |",
        "|---|---|---|---|---|",
    ]
    for t in paired_sizes(rows):
        a, b = by[(1, t)], by[(2, t)]
        above = (b["peak_rss"] - b["built_rss"]) / (a["peak_rss"] - a["built_rss"])
        est = b["estimate"]["activations"] / a["estimate"]["activations"]
        lines.append(
            f"| {t:,} | {b['peak_rss'] / a['peak_rss']:.2f} | {above:.2f} | {est:.2f} | "
            f"{b['bytes_per_s'] / a['bytes_per_s']:.2f} |"
        )
    within = [abs(r["estimate"]["total"] / r["peak_rss"] - 1) <= 0.25 for r in rows]
    lines += [
        "",
        f"- estimate within +-25% of the measured peak: {sum(within)} of {len(within)} runs",
        f"- largest T under the cap: CP=2 trains {largest[2] / largest[1]:.2f}x the "
        "bytes per sequence of CP=1 in the same memory per rank",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--cap-gib", type=float, default=3.0)
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results_context.md"))
    ap.add_argument("--json", default=str(REPO / "benchmarks" / "results_context.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--seq-len", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--context", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ring", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--run-dir", help=argparse.SUPPRESS)
    ap.add_argument(
        "--add-sizes",
        help="comma list of T: measure only these (CP=1 and 2) and add them to the JSON's rows",
    )
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    command = f".venv/bin/python benchmarks/bench_context.py --steps {args.steps} --cap-gib {args.cap_gib}"
    if args.add_sizes:
        sizes = [int(t) for t in args.add_sizes.split(",")]
        res = json.loads(Path(args.json).read_text())
        new = run(args.steps, args.cap_gib, sizes, search=False)
        key = {(r["context"], r["seq_len"]) for r in new["rows"]}
        res["rows"] = [r for r in res["rows"] if (r["context"], r["seq_len"]) not in key]
        res["rows"] = sorted(res["rows"] + new["rows"], key=lambda r: (r["seq_len"], r["context"]))
        res["commands"] = [
            *res.get("commands", [command]),
            f"{command} --add-sizes {args.add_sizes}",
        ]
    else:
        res = run(args.steps, args.cap_gib)
        res["commands"] = [command]
    command = "`, `".join(res["commands"])
    Path(args.out).write_text(report(res, command))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
