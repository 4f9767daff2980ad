"""The targets of issue 9, each checked against a run's results: one line per target,
saying the measured value and whether it is met."""

from __future__ import annotations

import itertools

from benchmarks.bench_context import paired_sizes


def model_targets(m: dict) -> list[str]:
    """Section 1: MegaByte's speed-up at T = 65,536 and its memory ratio falling with T."""
    out = []
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
    return out


def mfu_target(f: dict) -> list[str]:
    """Section 5: the 25M recipe's loop MFU against the measured matmul peak."""
    v = f["variants"]["current"]
    return [f"- training-loop MFU >= 0.5 of the measured fp32 matmul peak (25M recipe, "
            f"T=8,192): **{v['mfu_vs_measured_peak']:.2f}** — "
            + ("met" if v["mfu_vs_measured_peak"] >= 0.5 else "NOT met")]  # fmt: skip


def data_target(d: dict) -> list[str]:
    """Section 3: prepare's throughput per worker against `zstd -3 -T1`."""
    parts = [
        f"{name} **{c['prepare_mb_s'] / c['zstd_mb_s']:.2f}x**"
        + (" — met" if c["prepare_mb_s"] / c["zstd_mb_s"] >= 0.7 else " — NOT met")
        for name, c in d["corpora"].items()
    ]
    return ["- prepare >= 0.7x of `zstd -3 -T1` per worker (1 worker): " + "; ".join(parts)
            + " (2 workers and the reasons: results_data.md, NOTES.md)"]  # fmt: skip


def mfu_small_target(fs: dict) -> list[str]:
    """Section 5, small widths: the loop MFU against the measured matmul peak."""
    x = fs["variants"]["current"]["mfu_vs_measured_peak"]
    sus = fs["variants"]["current"].get("mfu_vs_sustained")
    return [f"- small widths (512/256, 6/4 layers, T=8,192) loop MFU >= 0.65 of the measured "
            f"peak: **{x:.2f}** — " + ("met" if x >= 0.65 else "NOT met")
            + (f" (of the sustained matmul rate: {sus:.2f})" if sus else "")]  # fmt: skip


def context_targets(c: dict) -> list[str]:
    """Section 6: CP=2's memory per rank falling toward half, and the dry-run estimate."""
    by = {(r["context"], r["seq_len"]): r for r in c["rows"]}
    sizes = paired_sizes(c["rows"])
    ratios = [by[(2, t)]["peak_rss"] / by[(1, t)]["peak_rss"] for t in sizes]
    # What CP splits is the memory above the built engine (framework and weights stay).
    above = [(by[(2, t)]["peak_rss"] - by[(2, t)]["built_rss"])
             / (by[(1, t)]["peak_rss"] - by[(1, t)]["built_rss"]) for t in sizes]  # fmt: skip
    within = sum(abs(r["estimate"]["total"] / r["peak_rss"] - 1) <= 0.25 for r in c["rows"])
    return [
        "- CP=2 / CP=1 memory per rank falls toward 1/2 as T grows: total "
        + " -> ".join(f"{x:.2f}" for x in ratios) + ", above the built engine "
        + " -> ".join(f"{x:.2f}" for x in above)
        + (" — met" if ratios[-1] <= ratios[0] - 0.05 else " — NOT met"),
        f"- dry-run estimate within +-25% of the measured peak: {within} of "
        f"{len(c['rows'])} runs — " + ("met" if within >= 3 else "NOT met"),
    ]  # fmt: skip


# results key -> its target lines, in the order the report lists them.
SECTION_TARGETS = (
    ("model", model_targets),
    ("mfu", mfu_target),
    ("data", data_target),
    ("mfu_small", mfu_small_target),
    ("context", context_targets),
)


def targets(results: dict) -> list[str]:
    """One `- target: value — met / NOT met` line per target whose section has results."""
    out = []
    for key, lines in SECTION_TARGETS:
        if results.get(key):
            out += lines(results[key])
    out.append("- GPU targets (bf16 MFU >= 45% for paper_text, 1M-byte context with >= 100M "
               "params on one H200): see benchmarks/gpu.sh / results_gpu.md")  # fmt: skip
    return out
