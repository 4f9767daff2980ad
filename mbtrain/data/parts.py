"""What `prepare` and `merge` share: the splits, the names of parts, a part's stats and how
they add up, and the result both return.

A part is the unit of parallelism and of resumption (see `preparation.py`); its stats are
written into its completion marker `parts/<part>.json`, and the merge adds the markers up into
`stats.json`. Kept apart from both, so that neither imports the other's module for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mbtrain.data.progress import rate

SPLITS = ("train", "val")
EXIT_OK, EXIT_SKIPPED = 0, 3


def part_name(k: int, total: int) -> str:
    return f"part-{k:05d}-of-{total:05d}"


def empty_stats() -> dict:
    return {
        "documents": dict.fromkeys(SPLITS, 0),
        "bytes": dict.fromkeys(SPLITS, 0),
        "samples": dict.fromkeys(SPLITS, 0),
        "sources": {},
        "skipped": [],
        "excluded": [],
        "empty": [],
        "utf8_replaced": 0,
        "decompressed": 0,
    }


def add_stats(total: dict, part: dict) -> None:
    for key in ("documents", "bytes", "samples"):
        for sp in SPLITS:
            total[key][sp] += part[key][sp]
    for spec, c in part["sources"].items():
        t = total["sources"].setdefault(spec, {"files": 0, "documents": 0, "bytes": 0})
        for k in t:
            t[k] += c[k]
    total["skipped"] += part["skipped"]
    total["excluded"] += part.get("excluded", [])
    total["empty"] += part.get("empty", [])
    total["utf8_replaced"] += part["utf8_replaced"]
    total["decompressed"] += part.get("decompressed", 0)
    if part.get("split_note"):
        total["split_note"] = part["split_note"]


@dataclass
class PrepareResult:
    """What `prepare`/`merge` did: stats (as in stats.json) and the process exit code."""

    out: str
    stats: dict = field(default_factory=dict)
    merged: bool = False
    read_bytes: int = 0
    """Input bytes (file sizes) this job read; 0 for a merge alone."""
    elapsed: float | None = None
    """Seconds this job took, from the listing of the inputs to the end of the merge."""

    @property
    def exit_code(self) -> int:
        """0 if every input was used, 3 if anything was skipped."""
        return EXIT_SKIPPED if self.stats.get("skipped") else EXIT_OK

    def summary(self) -> str:
        """A few human lines for the end of a run."""
        s = self.stats
        lines = [
            f"{'dataset' if self.merged else 'parts'} at {self.out}: "
            + ", ".join(
                f"{sp} {s['documents'][sp]} docs / {s['bytes'][sp]} bytes / {s['samples'][sp]} samples"
                for sp in SPLITS
            )
        ]
        if s.get("split_note"):
            lines.append(f"split: {s['split_note']}")
        if s.get("excluded"):
            lines.append(f"not read (listed in stats.json as excluded): {len(s['excluded'])}")
            lines += [f"  {x['where']}: {x['reason']}" for x in s["excluded"][:5]]
        if s.get("decompressed"):
            lines.append(f"{s['decompressed']} compressed files (.gz/.zst/.xz/.bz2) decompressed")
        if s.get("empty"):
            lines.append(f"{len(s['empty'])} empty files/records ignored (listed in stats.json)")
        if s.get("utf8_replaced"):
            lines.append(f"{s['utf8_replaced']} records had invalid UTF-8 replaced by U+FFFD")
        sk = s.get("skipped", [])
        if sk:
            lines.append(f"skipped {len(sk)} inputs (see stats.json):")
            lines += [f"  {x['where']}: {x['reason']}" for x in sk[:20]]
            if len(sk) > 20:
                lines.append(f"  ... and {len(sk) - 20} more")
        if self.elapsed is not None:
            lines.append(f"read {rate(self.read_bytes, self.elapsed)}")
        if not self.merged:
            lines.append("run merge once all jobs finished")
        return "\n".join(lines)
