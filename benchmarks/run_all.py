"""`make bench`: every benchmark of issue 9 in one run, written to benchmarks/results.md + PNGs.

Sections (each measured side by side within this one run; the machine is shared, so compare
the ratios, not the absolute numbers against another run):

1. MegaByte vs the byte-level transformer at matched parameters (~3.6M, fp32): training
   bytes/s and peak memory (max RSS of a fresh process per case) against T, and the analytic
   attention cost curves (baseline ~T^2; MegaByte ~T^2/P^2 global + T*P local).
   Cases come from benchmarks/bench_model.py (`train_case`, one subprocess each).
2. Generation bytes/s, KV cache vs full recompute (bench_model's `generation_case`).
3. Data: prepare MB/s vs the zstd CLI and loader MB/s per rank (bench_data's functions)
   against the bytes/s that training consumes (section 5's run).
4. Parallel overhead on CPU: TP=2 and PP=2 vs TP=1 (bench_parallel's `run_case`).
5. MFU of the real training loop (`mbtrain train recipes/bench_25m_cpu.yaml`, DeepSpeed,
   1 process, fp32) against a torch matmul peak measured in the same run (bench_train).
6. Context parallelism: memory per rank and bytes/s of CP=1 vs CP=2 at T = 64K, 256K and
   the largest T under a memory cap, beside the dry-run estimate (bench_context's `run`).
8. Eval: `mbtrain eval`'s scoring bytes/s (sliding, basic) against training bytes/s of the
   same model (bench_eval's `run`). (7, quality, is its own target: `make bench-quality`.)

    .venv/bin/python -m benchmarks.run_all [--quick] [--baseline DIR] [--only model,gen,...]

`--quick` is the same suite with fewer/shorter cases (a few minutes); `--baseline DIR` adds a
before/after MFU comparison with the `mbtrain` package in DIR.

This file runs the sections and merges in the ones an `--only` run kept from the last run;
the markdown is written by report.py (targets checked in targets.py), the PNGs by plots.py.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from benchmarks.plots import plot
from benchmarks.report import report

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "benchmarks"
SECTIONS = ("model", "gen", "data", "parallel", "mfu", "mfu_small", "context", "eval")
# The small-width model users start with on CPU (global 8 x 64 = 512 wide, 6 layers; local 256
# wide, 4 layers; T = 8,192): where the loop is furthest from the matmul peak.
SMALL = [
    "model.global_dim=64", "model.global_layers=6", "model.global_heads=8",
    "model.local_dim=256", "model.local_layers=4", "model.local_heads=4",
]  # fmt: skip


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def machine() -> str:
    import torch

    from mbtrain.monitor.peak import cpu_name

    cpu = cpu_name()

    return (
        f"{cpu}, {os.cpu_count()} CPU cores (shared with other jobs), {torch.get_num_threads()} "
        f"torch threads, torch {torch.__version__}, Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


# ------------------------------------------------------------------ 1. model scaling


def model_section(quick: bool, threads: int, long: bool = False) -> dict:
    from benchmarks import bench_model as bm

    if quick:
        cases = [("megabyte", 4096, 1), ("transformer", 4096, 1), ("megabyte", 16384, 1)]
        cases += [("megabyte", 65536, 1)]
    else:
        cases = [("megabyte", 4096, 3), ("transformer", 4096, 2), ("megabyte", 16384, 2)]
        cases += [("transformer", 16384, 1), ("megabyte", 65536, 2)]
    if long:  # MegaByte only: the baseline there would take hours on 2 cores
        cases += [("megabyte", 131072, 1), ("megabyte", 262144, 1)]
    best: dict[tuple, dict] = {}
    # Full mode measures every case twice, in reversed order the second time, and keeps the
    # faster: bursts of other jobs on the shared cores otherwise decide single runs.
    for rnd in range(1 if quick else 2):
        for arch, t, steps in cases if rnd % 2 == 0 else cases[::-1]:
            r = bm.run_sub(["--one", arch, str(t), str(steps), "0"], threads)
            r["load"] = os.getloadavg()[0]
            key = (arch, t)
            runs = [*best.get(key, {}).get("runs_bytes_per_s", []), r["bytes_per_s"]]
            if key not in best or r["bytes_per_s"] > best[key]["bytes_per_s"]:
                best[key] = r
            best[key]["runs_bytes_per_s"] = runs
            log(f"train {arch} T={t}: {r['bytes_per_s']:,.0f} bytes/s, RSS {r['peak_rss_mib']:.0f}")
    rows = list(best.values())
    rows += estimated_baseline(rows, bm.BASELINE)
    rows.sort(key=lambda r: (r["arch"], r["seq_len"]))
    return {"rows": rows, "megabyte": bm.MEGABYTE, "baseline": bm.BASELINE}


def estimated_baseline(rows: list[dict], baseline: dict) -> list[dict]:
    """Rows for the T = 4K, 16K, 64K that the baseline transformer was not run at."""
    from mbtrain.model import ModelConfig, count_parameters, flops_per_byte

    out = []
    # The baseline where it is not run: FLOPs at the FLOP rate it reached at its largest
    # measured T; memory above the idle process extrapolated linearly in T (SDPA's flash
    # kernel keeps no T x T matrix, so activations grow ~linearly).
    measured = sorted((r for r in rows if r["arch"] == "transformer"), key=lambda r: r["seq_len"])
    ref = measured[-1]
    above = [(r["seq_len"], r["peak_rss_mib"] - r["rss_model_mib"]) for r in measured]
    per_byte = above[-1][1] / above[-1][0]
    if len(above) > 1:
        per_byte = (above[-1][1] - above[0][1]) / (above[-1][0] - above[0][0])
    for t in (4096, 16384, 65536):
        if any(r["arch"] == "transformer" and r["seq_len"] == t for r in rows):
            continue
        cfg = ModelConfig(**baseline, seq_len=t)
        step = flops_per_byte(cfg) * t / 1e9 / ref["gflop_per_s"]
        mem = above[-1][1] + per_byte * (t - above[-1][0])
        out.append(
            {
                "arch": "transformer",
                "seq_len": t,
                "params": count_parameters(cfg),
                "step_s": step,
                "bytes_per_s": t / step,
                "tflops_per_step": flops_per_byte(cfg) * t / 1e12,
                "gflop_per_s": ref["gflop_per_s"],
                "rss_model_mib": ref["rss_model_mib"],
                "peak_rss_mib": ref["rss_model_mib"] + mem,
                "checkpointing": False,
                "estimated": True,
            }
        )
    return out


# ------------------------------------------------------------------ 2. generation


def gen_section(quick: bool, threads: int) -> dict:
    from benchmarks import bench_model as bm

    cases = [("megabyte", 128, 2), ("transformer", 48, 1)] if quick else [
        ("megabyte", 512, 3),
        ("transformer", 256, 2),
    ]  # fmt: skip
    rows = []
    for arch, n, r in cases:
        rows.append(bm.run_sub(["--gen", arch, "8192", str(n), str(r)], threads))
        g = rows[-1]
        log(f"generate {arch}: cached {g['cached_bytes_per_s']:.1f} vs recompute "
            f"{g['recompute_bytes_per_s']:.3f} bytes/s")  # fmt: skip
    return {"rows": rows}


# ------------------------------------------------------------------ 3. data


def data_section(quick: bool) -> dict:
    """prepare (1 worker) vs `zstd -3 -T1` on both of bench_data's corpora, and the loader."""
    from benchmarks import bench_data as bd

    tmp = tempfile.mkdtemp(prefix="bench-all-data-")
    out = {}
    try:
        corpora = bd.make_corpora(tmp, 4)
        for name, c in corpora.items():
            prep, zstd = [], []
            for rnd in range(1 if quick else 2):
                dest = os.path.join(tmp, f"{name}-prep{rnd}")
                prep.append(bd.run_child(str(REPO), "prepare", dest, "1", c["inputs"])[0])
                zstd.append(bd.zstd_cli(c["cat"])[0])
            best = min(prep, key=lambda r: r["prepare_s"])
            out[name] = {
                "bytes": c["bytes"],
                "docs": c["docs"],
                "prepare_mb_s": best["bytes"] / best["prepare_s"] / 1e6,
                "zstd_mb_s": c["bytes"] / min(zstd) / 1e6,
            }
        train = os.path.join(tmp, "pystdlib-prep0", "train")
        loader, _ = bd.run_child(str(REPO), "loader", train)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "corpora": out,
        "loader_mb_s": loader["loader_bytes"] / loader["loader_s"] / 1e6,
        "collate_mb_s": loader["collate_bytes"] / loader["collate_s"] / 1e6,
    }


# ------------------------------------------------------------------ 4. parallel


def parallel_section(quick: bool) -> dict:
    from benchmarks import bench_parallel as bp

    wanted = {"TP=1": None, "TP=2, local split": None, "PP=2": None}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-all-par-") as tmp:
        for name, procs, threads, overrides in bp.CASES:
            if name not in wanted or any(r["name"] == name for r in rows):
                continue
            r = bp.run_case(name, procs, threads, overrides, 1 if quick else 2, Path(tmp))
            rows.append({"name": name, "procs": procs, "threads": threads, **r})
            log(f"parallel {name}: {r['bytes_per_s']:,.0f} bytes/s")
    return {"rows": rows, "model": bp.MODEL}


# ------------------------------------------------------------------ 5. MFU


def mfu_section(quick: bool, baseline: str | None, baseline_name: str = "baseline") -> dict:
    from benchmarks import bench_train as bt

    return bt.run(
        steps=5 if quick else 8,
        warmup=2 if quick else 3,
        baseline=baseline,
        rounds=1 if quick or not baseline else 2,
        baseline_name=baseline_name,
    )


def mfu_small_section(quick: bool) -> dict:
    from benchmarks import bench_train as bt

    return bt.run(steps=5 if quick else 8, warmup=2 if quick else 3, overrides=SMALL)


# ------------------------------------------------------------------ 6. context parallelism


def context_section(quick: bool) -> dict:
    from benchmarks import bench_context as bc

    res = bc.run(steps=1 if quick else 2, cap_gib=2.0 if quick else 3.0)
    (HERE / "results_context.json").write_text(json.dumps(res, indent=1))
    (HERE / "results_context.md").write_text(
        bc.report(res, ".venv/bin/python -m benchmarks.run_all --only context")
    )
    return res


# ------------------------------------------------------------------ 8. eval


def eval_section(quick: bool, threads: int) -> dict:
    from benchmarks import bench_eval as be

    res = be.run(seq_len=2048, kb=20 if quick else 50, threads=threads, rounds=1 if quick else 2)
    for r in res["rows"]:
        chosen = " (threads chosen per batch)" if r["threads_chosen"] else ""
        log(
            f"eval {r['mode']}{chosen}: {r['bytes_per_s']:,.0f} bytes/s, {r['vs_training']:.2f}x training"
        )
    return res


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short version (a few minutes)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    ap.add_argument("--long", action="store_true", help="MegaByte also at T = 128K and 256K")
    ap.add_argument("--baseline", help="mbtrain package root to compare MFU against")
    ap.add_argument("--baseline-name", default="baseline", help="its row name in the table")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(HERE / "results.md"))
    ap.add_argument("--json", default=None, help="raw results (default benchmarks/results.json)")
    return ap.parse_args()


def run_sections(args: argparse.Namespace, only: list[str]) -> dict:
    """Run the sections named in `only`; a failing one leaves its traceback in "errors"."""
    results: dict = {"machine": machine(), "errors": {}}
    load0 = os.getloadavg()[0]
    runners = {
        "model": lambda: model_section(args.quick, args.threads, args.long),
        "gen": lambda: gen_section(args.quick, args.threads),
        "mfu": lambda: mfu_section(args.quick, args.baseline, args.baseline_name),
        "data": lambda: data_section(args.quick),
        "parallel": lambda: parallel_section(args.quick),
        "mfu_small": lambda: mfu_small_section(args.quick),
        "context": lambda: context_section(args.quick),
        "eval": lambda: eval_section(args.quick, args.threads),
    }
    # MFU before data: the data section's "training consumes" column reads the MFU run.
    for name in ("model", "gen", "mfu", "mfu_small", "data", "parallel", "context", "eval"):
        if name not in only:
            continue
        log(f"section {name}")
        try:
            results[name] = runners[name]()
        except Exception:  # one failing section must not lose the others' numbers
            results["errors"][name] = traceback.format_exc()
            log(f"section {name} failed:\n{results['errors'][name][-2000:]}")
    results["load"] = (load0, os.getloadavg()[0])
    return results


def carry_earlier(results: dict, only: list[str], saved: Path) -> None:
    """A partial run (--only) keeps the other sections of the last full picture (`saved`),
    with their dates and machines."""
    previous = json.loads(saved.read_text()) if saved.exists() else {}
    stamp = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    results["dates"] = {name: stamp for name in only if name in results}
    results["carried"] = []
    # bench_context.py run on its own after the last run_all: its numbers are the newer ones
    standalone = HERE / "results_context.json"
    if standalone.exists() and (
        "context" not in previous or standalone.stat().st_mtime > saved.stat().st_mtime
    ):
        previous["context"] = json.loads(standalone.read_text())
        when = previous["context"].get("date") or (
            f"{datetime.fromtimestamp(standalone.stat().st_mtime, timezone.utc):%Y-%m-%d %H:%M}"
        )
        previous.setdefault("dates", {})["context"] = f"{when} UTC, bench_context.py"
    # Kept sections may come from another machine: absolute rates differ by CPU, so say which.
    results["machines"] = {name: results["machine"] for name in only if name in results}
    for name in SECTIONS:
        if name not in only and name in previous:
            results[name] = previous[name]
            results["dates"][name] = previous.get("dates", {}).get(name, "earlier")
            results["machines"][name] = previous.get("machines", {}).get(
                name, previous.get("machine", "unknown")
            )
            results["carried"].append(name)


def main() -> None:
    args = parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    only = [s for s in args.only.split(",") if s]
    t0 = time.perf_counter()
    results = run_sections(args, only)
    saved = Path(args.json) if args.json else HERE / "results.json"
    carry_earlier(results, only, saved)
    out = Path(args.out)
    pngs = plot(results, out.parent)
    wall = time.perf_counter() - t0
    out.write_text(report(results, pngs, wall, quick=args.quick, argv=sys.argv[1:]))
    saved.write_text(json.dumps(results, indent=1, default=str))
    log(f"wrote {out} and {', '.join(pngs)} in {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
