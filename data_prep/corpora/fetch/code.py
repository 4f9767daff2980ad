"""The `code` corpus: C sources of the Linux 6.1 core kernel, file systems and networking."""

from __future__ import annotations

import tarfile
from pathlib import Path

from .apt import Ctx
from .shell import log

LINUX_DIRS = ("kernel", "mm", "fs", "net", "block", "ipc", "init", "io_uring")
LINUX_EXCLUDE = ("fs/nls/",)  # codepage tables: generated data, not code


def build_code(ctx: Ctx, files: Path) -> dict:
    d = ctx.deb("linux-source-6.1")
    tars = sorted((d.root / "usr/src").glob("linux-source-*.tar.xz"))
    if len(tars) != 1:
        raise SystemExit(f"error: expected one linux-source tarball, found {tars}")
    n = 0
    log(f"  reading {tars[0].name} (xz, ~1.4 GB unpacked; selected files only)")
    with tarfile.open(tars[0], mode="r|xz") as tf:
        for m in tf:
            if not m.isreg():
                continue
            parts = m.name.split("/", 1)
            if len(parts) != 2:
                continue
            rel = parts[1]
            if not rel.endswith((".c", ".h")) or rel.split("/", 1)[0] not in LINUX_DIRS:
                continue
            if rel.startswith(LINUX_EXCLUDE):
                continue
            dst = files / "linux" / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            f = tf.extractfile(m)
            assert f is not None
            dst.write_bytes(f.read())
            n += 1
    return {
        "title": "C source code: Linux 6.1 core kernel, file systems and networking",
        "packages": ["linux-source-6.1"],
        "licence": "GPL-2.0 (the kernel's COPYING; some files dual-licensed, see their SPDX lines).",
        "how": [
            f"`{tars[0].name}` from the package, streamed with Python's tarfile; kept every regular "
            f"`*.c`/`*.h` under {', '.join(d + '/' for d in LINUX_DIRS)} except {', '.join(LINUX_EXCLUDE)} "
            f"({n} files), bytes unchanged, at `files/linux/<path in the tree>`."
        ],
        "format": "C source, bytes as in the kernel tree.",
    }
