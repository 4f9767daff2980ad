"""The `exe` corpus: x86-64 ELF executables and shared libraries from common packages."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .apt import Ctx

EXE_PACKAGES = [
    "binutils-x86-64-linux-gnu",
    "busybox",
    "coreutils",
    "gdb",
    "libc6",
    "libgtk-3-0",
    "libperl5.36",
    "libpython3.11",
    "libsqlite3-0",
    "libstdc++6",
    "openssh-client",
    "vim-nox",
]


def build_exe(ctx: Ctx, files: Path) -> dict:
    n = 0
    for pkg in EXE_PACKAGES:
        d = ctx.deb(pkg)
        for dirpath, dirnames, filenames in os.walk(d.root):
            dirnames.sort()
            for fn in sorted(filenames):
                p = Path(dirpath) / fn
                if p.is_symlink() or not p.is_file():
                    continue
                with open(p, "rb") as f:
                    if f.read(4) != b"\x7fELF":
                        continue
                rel = p.relative_to(d.root)
                dst = files / pkg / rel
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(p, dst)
                n += 1
    return {
        "title": "x86-64 ELF executables and shared libraries",
        "packages": EXE_PACKAGES,
        "licence": "Each package's own (GPL, LGPL, BSD, MIT, ...; see their copyright files).",
        "how": [
            f"Every regular file (not a symlink) starting with the ELF magic in the packages, "
            f"bytes unchanged (stripped, as Debian ships them): {n} files at `files/<package>/<path>`."
        ],
        "format": "ELF64 x86-64 binaries.",
    }
