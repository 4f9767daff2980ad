"""Debian plumbing: download a pinned .deb once, check its sha256, unpack it once; install the
tools a corpus step runs; ask dpkg for installed versions."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from .pins import PINS
from .shell import log, run, sha256_file

# Debian packages of the tools each step runs (installed with apt-get when missing and root).
TOOLS = {
    "text": {"mod2imp": "libsword-utils"},
    "code": {},
    "image": {},
    "audio": {"sox": "sox", "soxi": "sox"},
    "exe": {},
}
TOOL_EXTRA_PKGS = {"audio": ["libsox-fmt-all"]}
TOOL_VERSION_PKGS = {
    "text": ["libsword-utils", "libsword1.9.0"],
    "audio": ["sox", "libsox3", "libsox-fmt-ogg", "libvorbisfile3"],
    "code": [],
    "image": [],
    "exe": [],
}


@dataclass
class Deb:
    name: str
    version: str
    sha256: str
    path: Path
    root: Path  # where `dpkg-deb -x` unpacked it
    pinned: bool

    def copyright_file(self) -> Path:
        return self.root / "usr/share/doc" / self.name / "copyright"


@dataclass
class Ctx:
    out: Path
    cache: Path
    jobs: int
    allow_newer: bool
    force: bool
    debs: dict[str, Deb] = field(default_factory=dict)

    # ---- packages -----------------------------------------------------------------------
    def deb(self, name: str) -> Deb:
        """Download (once) the pinned version of package NAME and unpack it (once)."""
        if name in self.debs:
            return self.debs[name]
        version, want_sha = PINS[name]
        ddir = self.cache / "debs"
        ddir.mkdir(parents=True, exist_ok=True)
        path = self._find_deb(ddir, name, version)
        pinned = True
        if path is None:
            log(f"apt-get download {name}={version}")
            r = run(_apt_download([f"{name}={version}"]), cwd=ddir, check=False)
            if r.returncode != 0:
                if not self.allow_newer:
                    raise SystemExit(
                        f"error: {name}={version} is no longer downloadable (Debian replaced it); "
                        "rerun with --allow-newer to take the current version"
                    )
                log(f"  {name}={version} gone; --allow-newer: apt-get download {name}")
                run(_apt_download([name]), cwd=ddir)
                pinned = False
            path = self._find_deb(ddir, name, None if not pinned else version)
            if path is None:
                raise SystemExit(f"error: downloaded .deb of {name} not found in {ddir}")
        real_version = _deb_field(path, "Version")
        sha = sha256_file(path)
        if real_version != version:
            pinned = False
        if pinned and sha != want_sha:
            raise SystemExit(f"error: {path.name}: sha256 {sha} != pinned {want_sha}")
        root = self.cache / "unpacked" / f"{name}_{real_version.replace(':', '%3a')}"
        if not (root / ".unpacked").exists():
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            log(f"dpkg-deb -x {path.name}")
            run(["dpkg-deb", "-x", str(path), str(root)])
            (root / ".unpacked").write_text("ok\n")
        d = Deb(name, real_version, sha, path, root, pinned)
        self.debs[name] = d
        return d

    @staticmethod
    def _find_deb(ddir: Path, name: str, version: str | None) -> Path | None:
        found = []
        for p in sorted(ddir.glob(f"{name}_*.deb")):
            if p.name.split("_", 1)[0] != name:
                continue
            v = _deb_field(p, "Version")
            if version is None or v == version:
                found.append((v, p))
        if not found:
            return None
        if version is None:  # newest, by dpkg's ordering
            best = found[0]
            for v, p in found[1:]:
                if (
                    run(["dpkg", "--compare-versions", v, "gt", best[0]], check=False).returncode
                    == 0
                ):
                    best = (v, p)
            return best[1]
        return found[0][1]


def _apt_download(specs: list[str]) -> list[str]:
    # Running as root into a directory _apt cannot write: tell apt not to drop privileges.
    opt = ["-o", "APT::Sandbox::User=root"] if os.geteuid() == 0 else []
    return ["apt-get", *opt, "download", *specs]


def _deb_field(path: Path, fld: str) -> str:
    return run(["dpkg-deb", "-f", str(path), fld], capture_output=True, text=True).stdout.strip()


def ensure_tools(corpus: str) -> None:
    missing = sorted({pkg for tool, pkg in TOOLS[corpus].items() if not shutil.which(tool)})
    extra = [p for p in TOOL_EXTRA_PKGS.get(corpus, []) if not _dpkg_installed(p)]
    need = missing + extra
    for tool in ("dpkg-deb", "apt-get"):
        if not shutil.which(tool):
            raise SystemExit(f"error: {tool} not found (this script needs a Debian system)")
    if not need:
        return
    if os.geteuid() != 0:
        raise SystemExit(
            f"error: {corpus} needs Debian packages {need}: apt-get install {' '.join(need)}"
        )
    log(f"apt-get install {' '.join(need)}")
    run(["apt-get", "install", "-y", "--no-install-recommends", *need])


def _dpkg_installed(pkg: str) -> bool:
    r = run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True, check=False)
    return r.returncode == 0 and "install ok installed" in r.stdout


def dpkg_version(pkg: str) -> str | None:
    r = run(["dpkg-query", "-W", "-f=${Version}", pkg], capture_output=True, text=True, check=False)
    return r.stdout.strip() or None if r.returncode == 0 else None
