"""What a finished corpus carries beside its files: MANIFEST.sha256, stats.json (sizes and
compressor bits per byte) and SOURCE.md (packages, licences, how the files were made)."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .apt import TOOL_VERSION_PKGS, Ctx, dpkg_version
from .pins import PILLOW_VERSION
from .shell import log, nice, sha256_file

COMPRESSORS = [
    ("gzip -9", ["gzip", "-9", "-c", "-n"]),
    ("bzip2 -9", ["bzip2", "-9", "-c"]),
    ("xz -9e", ["xz", "-9e", "-c", "-T1"]),
    ("zstd -19", ["zstd", "-19", "-c", "-q", "--single-thread"]),
]


def _compressed_size(cmd: list[str], path: Path) -> int:
    with open(path, "rb") as f:
        p = subprocess.Popen(nice(cmd), stdin=f, stdout=subprocess.PIPE)
        assert p.stdout is not None
        n = 0
        for chunk in iter(lambda: p.stdout.read(1 << 20), b""):
            n += len(chunk)
        if p.wait() != 0:
            raise SystemExit(f"error: {' '.join(cmd)} < {path} failed")
    return n


def compressor_table(paths: list[Path], jobs: int) -> dict[str, int]:
    out = {}
    for name, cmd in COMPRESSORS:
        if not shutil.which(cmd[0]):
            log(f"  {cmd[0]} not installed: skipping {name}")
            continue
        t0 = time.time()
        with ThreadPoolExecutor(max_workers=jobs) as ex:
            out[name] = sum(ex.map(lambda p, c=cmd: _compressed_size(c, p), paths))
        log(f"  {name}: {out[name]:,} bytes ({time.time() - t0:.0f} s)")
    return out


def finish(ctx: Ctx, name: str, cdir: Path, info: dict, seconds: float) -> None:
    """Write MANIFEST.sha256, stats.json and SOURCE.md of a built corpus, then `.complete`
    (last: a corpus without it is rebuilt by the next fetch)."""
    files = cdir / "files"
    paths = sorted(p for p in files.rglob("*") if p.is_file())
    sizes = [p.stat().st_size for p in paths]
    total = sum(sizes)
    log(f"{name}: {len(paths)} files, {total:,} bytes; hashing and compressing per file")
    with open(cdir / "MANIFEST.sha256", "w") as f:
        for p in paths:
            f.write(f"{sha256_file(p)}  {p.relative_to(cdir).as_posix()}\n")
    comp = compressor_table(paths, ctx.jobs)
    (cdir / "stats.json").write_text(
        json.dumps(
            {
                "files": len(paths),
                "bytes": total,
                "median_file_bytes": int(statistics.median(sizes)),
                "min_file_bytes": min(sizes),
                "max_file_bytes": max(sizes),
                "compressed_bytes_per_file_summed": comp,
                "bits_per_byte": {k: 8 * v / total for k, v in comp.items()},
            },
            indent=1,
        )
        + "\n"
    )
    lines = _source_head(ctx, name, info, seconds) + _source_sizes(sizes, comp)
    (cdir / "SOURCE.md").write_text("\n".join(lines))
    (cdir / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S") + "\n")


def _source_head(ctx: Ctx, name: str, info: dict, seconds: float) -> list[str]:
    """SOURCE.md up to the sizes: how it was made, from which packages, under which licence."""
    lines = [
        f"# {name}: {info['title']}",
        "",
        "Produced by `data_prep/corpora/fetch_corpora.py` "
        f"(`python data_prep/corpora/fetch_corpora.py --out {ctx.out} {name}`); the files took {seconds:.0f} s "
        "to make, the statistics below some minutes more.",
        "",
    ]
    lines += [
        "## Source packages (Debian 12 bookworm, main)",
        "",
        "| package | version | .deb sha256 | pinned |",
        "|---|---|---|---|",
    ]
    for pkg in info["packages"]:
        d = ctx.debs[pkg]
        lines.append(
            f"| {d.name} | {d.version} | `{d.sha256}` | {'yes' if d.pinned else 'NO (--allow-newer)'} |"
        )
    tools = [(p, dpkg_version(p)) for p in TOOL_VERSION_PKGS.get(name, [])]
    tools = [f"{p} {v}" for p, v in tools if v]
    if name == "image":
        tools.append(f"Pillow {PILLOW_VERSION} (PyPI wheel, in {ctx.out / '.venv'})")
    lines += [
        "",
        f"Tools: {', '.join(tools) or 'Python ' + sys.version.split()[0] + ' stdlib, dpkg-deb'}.",
        "",
    ]
    lines += ["## Licence", "", info["licence"], "", "## How the files were made", ""]
    lines += [f"- {h}" for h in info["how"]]
    lines += ["", f"Format: {info['format']}", ""]
    return lines


def _source_sizes(sizes: list[int], comp: dict[str, int]) -> list[str]:
    """SOURCE.md's sizes and compressor table."""
    total = sum(sizes)
    lines = [
        "## Size",
        "",
        f"- files: {len(sizes)}",
        f"- total bytes: {total:,}",
        f"- file size median / min / max: {int(statistics.median(sizes)):,} / {min(sizes):,} / {max(sizes):,}",
        "",
        "## Compressors (each file compressed alone, sizes summed; bpb = 8 * compressed / raw)",
        "",
        "| compressor | compressed bytes | bits per byte |",
        "|---|---|---|",
    ]
    for k, v in comp.items():
        lines.append(f"| {k} | {v:,} | {8 * v / total:.4f} |")
    lines += [
        "",
        "`MANIFEST.sha256` lists every file's sha256 (`cd` here, then `sha256sum -c MANIFEST.sha256`).",
        "",
    ]
    return lines
