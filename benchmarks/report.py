"""benchmarks/results.md: the markdown report of a run_all run, one function per section.

Every section function takes the whole results dict (some sections read another's numbers:
the data section compares with what section 5's training consumed) and the errors by section,
and returns its lines; a section that did not run says why.
"""

from __future__ import annotations

import shlex
from datetime import datetime, timezone
from pathlib import Path

from benchmarks import bench_context as bc
from benchmarks.targets import targets

HERE = Path(__file__).resolve().parent


def fmt(v, spec: str = ",.0f") -> str:
    """A number for a table cell; n/a where the measurement is missing."""
    return "n/a" if v is None else format(v, spec)


def header(results: dict, quick: bool, argv: list[str], pngs: list[str], wall: float) -> list[str]:
    """Title, command, date, machine, load, sections carried from earlier runs, plot links."""
    args = shlex.join(argv)
    lines = [
        "# Benchmarks" + (" — quick run" if quick else ""),
        "",
        f"- command: `.venv/bin/python -m benchmarks.run_all{' ' + args if args else ''}` "
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
    return lines


def model_lines(results: dict, errors: dict) -> list[str]:
    """1. MegaByte vs the byte-level transformer: training rows and ratios."""
    m = results.get("model")
    lines: list[str] = []
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
    return lines


def gen_lines(results: dict, errors: dict) -> list[str]:
    """2. Generation bytes/s, KV cache vs full recompute."""
    g = results.get("gen")
    lines: list[str] = []
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
    return lines


def data_lines(results: dict, errors: dict) -> list[str]:
    """3. prepare and the loader vs zstd and what training consumes."""
    d, f = results.get("data"), results.get("mfu")
    lines: list[str] = []
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
    return lines


def parallel_lines(results: dict, errors: dict) -> list[str]:
    """4. TP=2 and PP=2 against TP=1 on CPU."""
    p = results.get("parallel")
    lines: list[str] = []
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
    return lines


def mfu_lines(results: dict, errors: dict) -> list[str]:
    """5. MFU of the training loop, 25M recipe (and a baseline's, if run)."""
    f = results.get("mfu")
    lines: list[str] = []
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
    return lines


def mfu_small_lines(results: dict, errors: dict) -> list[str]:
    """5, continued: the same loop at small widths."""
    fs = results.get("mfu_small")
    lines: list[str] = []
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
    return lines


def context_lines(results: dict, errors: dict) -> list[str]:
    """6. Context parallelism, as bench_context reports it."""
    c = results.get("context")
    lines: list[str] = []
    lines += ["## 6. Context parallelism on CPU (gloo, fp32)", ""]
    if c:
        body = bc.report(c, "").split("\n")
        lines += [ln for ln in body[2:] if not ln.startswith("- command")]
    else:
        lines += [f"not run: {errors.get('context', 'skipped')}; see results_context.md", ""]
    return lines


def quality_lines(results: dict, errors: dict) -> list[str]:
    """7. The quality table of results_quality.md (its own target)."""
    lines: list[str] = []
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
    return lines


def eval_lines(results: dict, errors: dict) -> list[str]:
    """8. `mbtrain eval` bytes/s beside training bytes/s of the same model (bench_eval)."""
    from benchmarks import bench_eval as be

    lines = ["## 8. Eval throughput against training", ""]
    if "eval" in results:
        lines += be.report(results["eval"])
    else:
        lines.append("not run" + (" (failed, see below)" if "eval" in errors else ""))
    return [*lines, ""]


def _standalone(title: str, name: str, command: str) -> list[str]:
    """A section copied from a benchmark's own report: its commands and its tables."""
    lines = [f"## {title}", ""]
    md = HERE / f"{name}.md"
    if not md.exists():
        return [*lines, f"not run yet: `{command}` writes {name}.md", ""]
    body = md.read_text().splitlines()
    keep = [ln for ln in body if ln.startswith(("|", "- command", "- date", "- plot", "- model"))]
    return [*lines, f"From [{name}.md]({name}.md):", "", *_spaced(keep), ""]


def _spaced(lines: list[str]) -> list[str]:
    """A blank line wherever a table starts or ends (markdown needs it)."""
    out: list[str] = []
    for ln in lines:
        if out and out[-1].startswith("|") != ln.startswith("|"):
            out.append("")
        out.append(ln)
    return out


def ring_lines(results: dict, errors: dict) -> list[str]:
    """9. Ring vs Ulysses vs CP=1 (bench_ring, its own command)."""
    return _standalone(
        "9. Ring attention vs Ulysses vs no context parallelism (gloo, fp32)",
        "results_ring",
        ".venv/bin/python -m benchmarks.bench_ring",
    )


def schedule_lines(results: dict, errors: dict) -> list[str]:
    """10. 512-byte vs long vs growing windows at the same wall clock (bench_quality)."""
    return _standalone(
        "10. Windows that grow: 512 vs long vs scheduled at the same wall clock",
        "results_schedule",
        ".venv/bin/python -m benchmarks.bench_quality --candidates cpu,t8k,grow8k "
        "--out benchmarks/results_schedule.md --json benchmarks/results_schedule.json",
    )


SECTIONS = (
    model_lines,
    gen_lines,
    data_lines,
    parallel_lines,
    mfu_lines,
    mfu_small_lines,
    context_lines,
    quality_lines,
    eval_lines,
    ring_lines,
    schedule_lines,
)


def rebuild(out: Path = HERE / "results.md") -> None:
    """Re-render results.md from results.json and the standalone reports without running
    anything: the header (command, date, machine of the last run_all) stays as it was."""
    import json

    results = json.loads((HERE / "results.json").read_text())
    old = out.read_text().splitlines()
    head = old[: next(i for i, ln in enumerate(old) if ln.startswith("## "))]
    stamp = f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC"
    lines = [*head[:-1], f"- sections re-rendered from their saved results: {stamp}", ""]
    for section in SECTIONS:
        lines += section(results, results.get("errors", {}))
    lines += ["## Targets", "", *targets(results)]
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    rebuild()


def report(results: dict, pngs: list[str], wall: float, quick: bool, argv: list[str]) -> str:
    """results.md of `results` (run_all's dict); `argv` is run_all's command line."""
    errors = results.get("errors", {})
    lines = header(results, quick, argv, pngs, wall)
    for section in SECTIONS:
        lines += section(results, errors)
    lines += ["## Targets", ""]
    lines += targets(results)
    for name, err in errors.items():
        lines += ["", f"<details><summary>error in section {name}</summary>", "", "```",
                  err[-3000:], "```", "</details>"]  # fmt: skip
    return "\n".join(lines) + "\n"
