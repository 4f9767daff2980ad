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

    .venv/bin/python -m benchmarks.run_all [--quick] [--baseline DIR] [--only model,gen,...]

`--quick` is the same suite with fewer/shorter cases (a few minutes); `--baseline DIR` adds a
before/after MFU comparison with the `mbtrain` package in DIR.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HERE = REPO / "benchmarks"
SECTIONS = ("model", "gen", "data", "parallel", "mfu", "mfu_small", "context")
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
    from mbtrain.model import ModelConfig, count_parameters, flops_per_byte

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
        cfg = ModelConfig(**bm.BASELINE, seq_len=t)
        step = flops_per_byte(cfg) * t / 1e9 / ref["gflop_per_s"]
        mem = above[-1][1] + per_byte * (t - above[-1][0])
        rows.append(
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
    rows.sort(key=lambda r: (r["arch"], r["seq_len"]))
    return {"rows": rows, "megabyte": bm.MEGABYTE, "baseline": bm.BASELINE}


def attention_flops(arch_kw: dict, t: int) -> dict:
    """Training attention FLOPs per sequence (scores + weighted sum, 3x forward)."""
    if arch_kw["arch"] == "transformer":
        return {"baseline": 3 * arch_kw["layers"] * 4 * t * t * arch_kw["dim"]}
    p, w = arch_kw["patch_size"], arch_kw["patch_size"] * arch_kw["global_dim"]
    k = t // p
    return {
        "global": 3 * arch_kw["global_layers"] * 4 * k * k * w,  # ~T^2/P^2
        "local": 3 * arch_kw["local_layers"] * 4 * t * p * arch_kw["local_dim"],  # ~T*P
    }


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


# ------------------------------------------------------------------ plots


def plot(results: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    m = results.get("model")
    if m:
        fig, ax = plt.subplots(1, 3, figsize=(16, 4.5))
        for arch, color in (("megabyte", "C0"), ("transformer", "C3")):
            rs = [r for r in m["rows"] if r["arch"] == arch]
            for key, a in (("bytes_per_s", ax[0]), ("mem", ax[1])):

                def val(r, key=key):
                    return r["bytes_per_s"] if key == "bytes_per_s" else (
                        r["peak_rss_mib"] - r["rss_model_mib"]
                    )  # fmt: skip

                a.plot(
                    [r["seq_len"] for r in rs], [val(r) for r in rs], "-", color=color, label=arch
                )
                est = [r for r in rs if r.get("estimated")]
                meas = [r for r in rs if not r.get("estimated")]
                a.plot([r["seq_len"] for r in meas], [val(r) for r in meas], "o", color=color)
                if est:
                    a.plot([r["seq_len"] for r in est], [val(r) for r in est], "o", color=color,
                           mfc="none", label=f"{arch} (estimated)")  # fmt: skip
        ax[0].set(xscale="log", yscale="log", xlabel="T (bytes)", ylabel="training bytes/s",
                  title="training throughput (fp32, batch 1)")  # fmt: skip
        ax[1].set(xscale="log", yscale="log", xlabel="T (bytes)",
                  ylabel="peak RSS above idle process (MiB)", title="peak memory")  # fmt: skip
        ts = [2**i for i in range(10, 21)]
        base = [attention_flops(m["baseline"], t)["baseline"] for t in ts]
        mb = [attention_flops(m["megabyte"], t) for t in ts]
        ax[2].plot(ts, base, color="C3", label="baseline ~T^2")
        ax[2].plot(
            ts, [f["global"] for f in mb], "--", color="C0", label="MegaByte global ~T^2/P^2"
        )
        ax[2].plot(ts, [f["local"] for f in mb], ":", color="C0", label="MegaByte local ~T*P")
        ax[2].plot(ts, [f["global"] + f["local"] for f in mb], color="C0", label="MegaByte total")
        ax[2].set(xscale="log", yscale="log", xlabel="T (bytes)",
                  ylabel="attention FLOPs per training sequence",
                  title="attention cost vs T (analytic, benchmark models)")  # fmt: skip
        for a in ax:
            a.grid(alpha=0.3, which="both")
            a.legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / "bench_scaling.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path.name)
    g, f = results.get("gen"), results.get("mfu")
    if g or f:
        fig, ax = plt.subplots(1, 2, figsize=(12, 4.5))
        if g:
            names = [r["arch"] for r in g["rows"]]
            x = range(len(names))
            ax[0].bar([i - 0.2 for i in x], [r["cached_bytes_per_s"] for r in g["rows"]], 0.4,
                      label="KV cache")  # fmt: skip
            ax[0].bar([i + 0.2 for i in x], [r["recompute_bytes_per_s"] for r in g["rows"]], 0.4,
                      label="full recompute")  # fmt: skip
            ax[0].set(xticks=list(x), xticklabels=names, yscale="log", ylabel="bytes/s",
                      title="generation at 8,192 bytes of context")  # fmt: skip
            ax[0].legend()
        if f:
            labels, loop, meas = [], [], []
            for name, v in f["variants"].items():
                labels.append(name)
                loop.append(v["loop_mfu_best"] or 0)
                meas.append(v["mfu_vs_measured_peak"])
            x = range(len(labels))
            ax[1].bar([i - 0.2 for i in x], loop, 0.4, label="as the loop reports it")
            ax[1].bar([i + 0.2 for i in x], meas, 0.4, label="vs matmul peak measured here")
            ax[1].axhline(0.5, color="k", ls="--", lw=1, label="target 0.5")
            ax[1].set(xticks=list(x), xticklabels=labels, ylabel="MFU",
                      title=f"training loop MFU, {f['recipe']}")  # fmt: skip
            ax[1].legend(fontsize=8)
        fig.tight_layout()
        path = out_dir / "bench_generation_mfu.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        files.append(path.name)
    return files


# ------------------------------------------------------------------ report


def fmt(v, spec: str = ",.0f") -> str:
    return "n/a" if v is None else format(v, spec)


def report(results: dict, args: argparse.Namespace, pngs: list[str], wall: float) -> str:
    argv = shlex.join(sys.argv[1:])
    lines = [
        "# Benchmarks" + (" — quick run" if args.quick else ""),
        "",
        f"- command: `.venv/bin/python -m benchmarks.run_all{' ' + argv if argv else ''}` "
        "(`make bench` runs it without arguments)",
        f"- date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, whole suite {wall / 60:.1f} min",
        f"- machine: {results['machine']}",
        f"- load average (1 min) at start / end: {results['load'][0]:.1f} / {results['load'][1]:.1f}"
        " — the cores may be shared with other jobs: absolute numbers are noisy, the ratios "
        "(side by side in one run) are the result",
        *(
            [
                "- sections kept from earlier runs (`--only` reran the others): "
                + ", ".join(
                    f"{k} ({results['dates'][k]}"
                    + (
                        f"; on {results['machines'][k]}"
                        if results.get("machines", {}).get(k, results["machine"])
                        != results["machine"]
                        else ""
                    )
                    + ")"
                    for k in results["carried"]
                )
            ]
            if results.get("carried")
            else []
        ),
        "- plots: " + ", ".join(f"[{p}]({p})" for p in pngs),
        "",
    ]
    errors = results.get("errors", {})
    m = results.get("model")
    lines += ["## 1. MegaByte vs byte-level transformer: training", ""]
    if m:
        lines += [
            f"- MegaByte: `{m['megabyte']}`",
            f"- baseline: `{m['baseline']}`",
            "- fp32, batch 1, AdamW, `model.loss`; step = best timed step after one warm-up; peak "
            "memory = max RSS of a fresh process, 'above idle' subtracts the RSS after building the "
            "model (torch's own ~0.7 GiB). **Estimated** rows were not run: step = model FLOPs / the "
            "FLOP rate the baseline reached at its largest measured T; memory = linear "
            "extrapolation of its measured memory (flash SDPA keeps no T x T matrix).",
            "",
            "| arch | T | params | step (s) | bytes/s | GFLOP/s | peak RSS (MiB) "
            "| above idle (MiB) | load | bytes/s of each run |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in m["rows"]:
            est = " **(estimated)**" if r.get("estimated") else ""
            lines.append(
                f"| {r['arch']}{est} | {r['seq_len']:,} | {r['params']:,} | {r['step_s']:.2f} | "
                f"{r['bytes_per_s']:,.0f} | {r['gflop_per_s']:.1f} | {r['peak_rss_mib']:,.0f} | "
                f"{r['peak_rss_mib'] - r['rss_model_mib']:,.0f} | "
                f"{fmt(r.get('load'), '.1f')} | "
                f"{', '.join(format(b, ',.0f') for b in r.get('runs_bytes_per_s', []))} |"
            )
        lines += ["", "| T | MegaByte / baseline bytes/s | MegaByte / baseline memory above idle |",
                  "|---|---|---|"]  # fmt: skip
        by = {(r["arch"], r["seq_len"]): r for r in m["rows"]}
        for t in sorted({r["seq_len"] for r in m["rows"]}):
            a, b = by.get(("megabyte", t)), by.get(("transformer", t))
            if not (a and b):
                continue
            est = " (baseline estimated)" if b.get("estimated") else ""
            ma = a["peak_rss_mib"] - a["rss_model_mib"]
            mbase = b["peak_rss_mib"] - b["rss_model_mib"]
            lines.append(
                f"| {t:,}{est} | **{a['bytes_per_s'] / b['bytes_per_s']:,.1f}x** | "
                f"{ma / mbase:.2f} |"
            )
        lines += [
            "",
            "Attention cost per training sequence (analytic, plotted in bench_scaling.png): the "
            "baseline's grows as T^2; MegaByte's as T^2/P^2 (global, over K = T/P patches) plus "
            "T*P (local, P bytes per patch).",
            "",
        ]
    else:
        lines += [f"not run: {errors.get('model', 'skipped')}", ""]

    g = results.get("gen")
    lines += ["## 2. Generation at 8,192 bytes of context", ""]
    if g:
        lines += [
            "KV-cached decoder on 1 thread (tiny ops; a 2nd thread on the shared box is slower), "
            "full recompute = one forward over the context per byte on all threads; best run.",
            "",
            "| arch | KV cache bytes/s | full recompute bytes/s | speed-up |",
            "|---|---|---|---|",
        ]
        for r in g["rows"]:
            lines.append(
                f"| {r['arch']} | {r['cached_bytes_per_s']:,.1f} ({r['cached_bytes']} bytes) | "
                f"{r['recompute_bytes_per_s']:.3f} ({r['recompute_bytes']} bytes) | "
                f"**{r['speedup']:,.0f}x** |"
            )
        lines.append("")
    else:
        lines += [f"not run: {errors.get('gen', 'skipped')}", ""]

    d, f = results.get("data"), results.get("mfu")
    lines += ["## 3. Data", ""]
    if d:
        consume = f["variants"]["current"]["bytes_per_s_best"] if f else None
        lines += [
            "Both corpora of benchmarks/bench_data.py (pystdlib: the stdlib's files; long: "
            "the same bytes x4 as 1 MiB documents), each run a fresh process; 2 workers, CPU "
            "seconds and before/after: results_data.md.",
            "",
            "| what | MB/s | ratio |",
            "|---|---|---|",
        ]
        for name, c in d["corpora"].items():
            lines += [
                f"| prepare `{name}` ({c['docs']} docs, {c['bytes'] / 1e6:.1f} MB), 1 worker | "
                f"{c['prepare_mb_s']:.1f} | **{c['prepare_mb_s'] / c['zstd_mb_s']:.2f}x** of zstd |",
                f"| `zstd -3 -T1` CLI, same bytes | {c['zstd_mb_s']:.1f} | 1.00x |",
            ]
        lines += [
            f"| loader, 1 rank (B=8, T=8,192, num_workers=0) | {d['loader_mb_s']:.1f} | "
            + (
                f"{d['loader_mb_s'] * 1e6 / consume:,.0f}x what training consumes |"
                if consume
                else "|"
            ),
            f"| training consumes (25M recipe, section 5) | {fmt(consume and consume / 1e6, '.4f')} "
            f"({fmt(consume)} bytes/s) | |",
            "",
        ]
    else:
        lines += [f"not run: {errors.get('data', 'skipped')}; see results_data.md", ""]

    p = results.get("parallel")
    lines += ["## 4. Parallel overhead on CPU (gloo, fp32)", ""]
    if p and p["rows"]:
        base = p["rows"][0]
        lines += [
            f"benchmarks/bench_parallel.py's cases; model: `{' '.join(p['model'])}`. Two processes "
            "share the two cores the single process uses: the ratio is overhead, not speed-up.",
            "",
            "| case | processes x threads | step (s) | bytes/s | vs TP=1 | params/rank (MiB) | peak RSS/rank (MiB) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in p["rows"]:
            lines.append(
                f"| {r['name']} | {r['procs']} x {r['threads']} | {r['step_s']:.2f} | "
                f"{r['bytes_per_s']:,.0f} | {r['bytes_per_s'] / base['bytes_per_s']:.2f}x | "
                f"{r['param_bytes'] / 2**20:.1f} | {r['peak_rss'] / 2**20:,.0f} |"
            )
        lines.append("")
    else:
        lines += [f"pending: {errors.get('parallel', 'skipped')}; see results_parallel.md", ""]

    lines += ["## 5. Model FLOPs utilisation of the training loop", ""]
    if f:
        lines += [
            f"`mbtrain train {f['recipe']}` (DeepSpeed, 1 process, fp32, real data loader and "
            f"AdamW), {f['params']:,} parameters, T = {f['seq_len']:,}, {f['bytes_per_step']:,} "
            f"bytes per optimizer step, {f['flops_per_byte'] / 1e6:.1f} MFLOP per byte (training). "
            "Warm-up steps dropped; best later step (the CPU is shared). 'loop' = the `mfu` the "
            "loop writes to metrics.jsonl (its own peak, measured at start-up by "
            "mbtrain.monitor.peak); 'measured peak' = best torch.mm (fp32, n = 1024 and 2048, all "
            "threads) measured in this process before and after each training run: "
            + ", ".join(f"{p / 1e9:.0f}" for p in f["measured_peaks"])
            + " GFLOP/s; 'sustained' = the same n = 2048 matmul run back to back for 3 s, "
            "best of "
            + ", ".join(f"{p / 1e9:.0f}" for p in f.get("sustained_rates", []))
            + " GFLOP/s (a loop never pauses between matmuls: on a shared CPU it cannot beat "
            "that rate).",
            "",
            "| code | bytes/s (best / mean) | model GFLOP/s | loop mfu (best) | loop's peak (GFLOP/s) | MFU vs measured peak | MFU vs sustained | peak RSS (MiB) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, v in f["variants"].items():
            lines.append(
                f"| {name} | {v['bytes_per_s_best']:,.0f} / {v['bytes_per_s_mean']:,.0f} | "
                f"{v['model_gflops_per_s']:.1f} | {fmt(v['loop_mfu_best'], '.3f')} | "
                f"{fmt(v['loop_peak_flops'] and v['loop_peak_flops'] / 1e9, '.1f')} | "
                f"**{v['mfu_vs_measured_peak']:.3f}** | {fmt(v.get('mfu_vs_sustained'), '.3f')} | "
                f"{v['mem_bytes'] / 2**20:,.0f} |"
            )
        lines.append("")
    else:
        lines += [f"not run: {errors.get('mfu', 'skipped')}", ""]

    fs = results.get("mfu_small")
    if fs:
        v = fs["variants"]["current"]
        lines += [
            f"Small widths, the same loop: `{' '.join(fs['overrides'])}` on {fs['recipe']} "
            f"({fs['params']:,} parameters, T = {fs['seq_len']:,}, "
            f"{fs['flops_per_byte'] / 1e6:.1f} MFLOP per byte): bytes/s best / mean "
            f"{v['bytes_per_s_best']:,.0f} / {v['bytes_per_s_mean']:,.0f}, model GFLOP/s "
            f"{v['model_gflops_per_s']:.1f}, MFU vs measured peak **{v['mfu_vs_measured_peak']:.3f}** "
            "(peaks " + ", ".join(f"{p / 1e9:.0f}" for p in fs["measured_peaks"]) + " GFLOP/s), "
            f"vs sustained matmuls {fmt(v.get('mfu_vs_sustained'), '.3f')} (rates "
            + ", ".join(f"{p / 1e9:.0f}" for p in fs.get("sustained_rates", []))
            + " GFLOP/s).",
            "",
        ]

    c = results.get("context")
    lines += ["## 6. Context parallelism on CPU (gloo, fp32)", ""]
    if c:
        from benchmarks import bench_context as bc

        body = bc.report(c, "").split("\n")
        lines += [ln for ln in body[2:] if not ln.startswith("- command")]
    else:
        lines += [f"not run: {errors.get('context', 'skipped')}; see results_context.md", ""]

    lines += ["## 7. Quality on real data: time to beat a compressor", ""]
    qmd = HERE / "results_quality.md"
    if qmd.exists():
        body = qmd.read_text().splitlines()
        lines += [
            "From [results_quality.md](results_quality.md) (`make bench-quality`, its own target: "
            "hours of training), where the candidates and the command are:",
            "",
            *[ln for ln in body if ln.startswith("|")],
            "",
        ]
    else:
        lines += ["not run yet: `make bench-quality` writes results_quality.md", ""]

    lines += ["## Targets", ""]
    lines += targets(results)
    for name, err in errors.items():
        lines += ["", f"<details><summary>error in section {name}</summary>", "", "```",
                  err[-3000:], "```", "</details>"]  # fmt: skip
    return "\n".join(lines) + "\n"


def targets(results: dict) -> list[str]:
    out = []
    m, f = results.get("model"), results.get("mfu")
    if m:
        by = {(r["arch"], r["seq_len"]): r for r in m["rows"]}
        a, b = by.get(("megabyte", 65536)), by.get(("transformer", 65536))
        if a and b:
            ratio = a["bytes_per_s"] / b["bytes_per_s"]
            est = " (baseline estimated from FLOPs)" if b.get("estimated") else ""
            out.append(f"- MegaByte >= 3x baseline bytes/s at T=65,536: **{ratio:,.1f}x**{est} — "
                       + ("met" if ratio >= 3 else "NOT met"))  # fmt: skip
        ratios = []
        for t in sorted({r["seq_len"] for r in m["rows"]}):
            a, b = by.get(("megabyte", t)), by.get(("transformer", t))
            if a and b:
                ratios.append((a["peak_rss_mib"] - a["rss_model_mib"])
                              / (b["peak_rss_mib"] - b["rss_model_mib"]))  # fmt: skip
        falling = all(x > y for x, y in itertools.pairwise(ratios))
        out.append("- memory ratio MegaByte/baseline falls as T grows: "
                   + " -> ".join(f"{r:.2f}" for r in ratios)
                   + (" — met" if falling else " — NOT met"))  # fmt: skip
    if f:
        v = f["variants"]["current"]
        out.append(f"- training-loop MFU >= 0.5 of the measured fp32 matmul peak (25M recipe, "
                   f"T=8,192): **{v['mfu_vs_measured_peak']:.2f}** — "
                   + ("met" if v["mfu_vs_measured_peak"] >= 0.5 else "NOT met"))  # fmt: skip
    d = results.get("data")
    if d:
        parts = [
            f"{name} **{c['prepare_mb_s'] / c['zstd_mb_s']:.2f}x**"
            + (" — met" if c["prepare_mb_s"] / c["zstd_mb_s"] >= 0.7 else " — NOT met")
            for name, c in d["corpora"].items()
        ]
        out.append("- prepare >= 0.7x of `zstd -3 -T1` per worker (1 worker): " + "; ".join(parts)
                   + " (2 workers and the reasons: results_data.md, NOTES.md)")  # fmt: skip
    fs = results.get("mfu_small")
    if fs:
        x = fs["variants"]["current"]["mfu_vs_measured_peak"]
        sus = fs["variants"]["current"].get("mfu_vs_sustained")
        out.append(f"- small widths (512/256, 6/4 layers, T=8,192) loop MFU >= 0.65 of the measured "
                   f"peak: **{x:.2f}** — " + ("met" if x >= 0.65 else "NOT met")
                   + (f" (of the sustained matmul rate: {sus:.2f})" if sus else ""))  # fmt: skip
    c = results.get("context")
    if c:
        by = {(r["context"], r["seq_len"]): r for r in c["rows"]}
        from benchmarks.bench_context import paired_sizes

        sizes = paired_sizes(c["rows"])
        ratios = [by[(2, t)]["peak_rss"] / by[(1, t)]["peak_rss"] for t in sizes]
        # What CP splits is the memory above the built engine (framework and weights stay).
        above = [(by[(2, t)]["peak_rss"] - by[(2, t)]["built_rss"])
                 / (by[(1, t)]["peak_rss"] - by[(1, t)]["built_rss"]) for t in sizes]  # fmt: skip
        within = sum(abs(r["estimate"]["total"] / r["peak_rss"] - 1) <= 0.25 for r in c["rows"])
        out.append("- CP=2 / CP=1 memory per rank falls toward 1/2 as T grows: total "
                   + " -> ".join(f"{x:.2f}" for x in ratios) + ", above the built engine "
                   + " -> ".join(f"{x:.2f}" for x in above)
                   + (" — met" if ratios[-1] <= ratios[0] - 0.05 else " — NOT met"))  # fmt: skip
        out.append(f"- dry-run estimate within +-25% of the measured peak: {within} of "
                   f"{len(c['rows'])} runs — " + ("met" if within >= 3 else "NOT met"))  # fmt: skip
    out.append("- GPU targets (bf16 MFU >= 45% for paper_text, 1M-byte context with >= 100M "
               "params on one H200): see benchmarks/gpu.sh / results_gpu.md")  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="short version (a few minutes)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    ap.add_argument("--long", action="store_true", help="MegaByte also at T = 128K and 256K")
    ap.add_argument("--baseline", help="mbtrain package root to compare MFU against")
    ap.add_argument("--baseline-name", default="baseline", help="its row name in the table")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=str(HERE / "results.md"))
    ap.add_argument("--json", default=None, help="raw results (default benchmarks/results.json)")
    args = ap.parse_args()
    os.environ.setdefault("DS_ACCELERATOR", "cpu")
    only = [s for s in args.only.split(",") if s]
    t0 = time.perf_counter()
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
    }
    # MFU before data: the data section's "training consumes" column reads the MFU run.
    for name in ("model", "gen", "mfu", "mfu_small", "data", "parallel", "context"):
        if name not in only:
            continue
        log(f"section {name}")
        try:
            results[name] = runners[name]()
        except Exception:  # one failing section must not lose the others' numbers
            results["errors"][name] = traceback.format_exc()
            log(f"section {name} failed:\n{results['errors'][name][-2000:]}")
    results["load"] = (load0, os.getloadavg()[0])
    # A partial run (--only) keeps the other sections of the last full picture, with their dates.
    saved = Path(args.json) if args.json else HERE / "results.json"
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
    out = Path(args.out)
    pngs = plot(results, out.parent)
    out.write_text(report(results, args, pngs, time.perf_counter() - t0))
    saved.write_text(json.dumps(results, indent=1, default=str))
    log(f"wrote {out} and {', '.join(pngs)} in {(time.perf_counter() - t0) / 60:.1f} min")


if __name__ == "__main__":
    main()
