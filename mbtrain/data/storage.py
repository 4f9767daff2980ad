"""Small-file I/O on a local directory or an object store, through streaming's own clients.

Shards go through `MDSWriter`; the few JSON files of ours (part markers, `stats.json`,
`mbtrain.json`) go through streaming's `CloudUploader` / `CloudDownloader` so that every
scheme streaming supports (s3, gs, oci, ...) works here too, with the same credentials and
`S3_ENDPOINT_URL`. Local writes are atomic (temp file + rename) because the presence of these
files is what marks work as finished.

Every local file is created with the mode a plain `open()` gives it (0666 less the umask):
`tempfile.mkstemp` would make it 0600, and a dataset prepared for a cluster must be readable by
the other users of that cluster.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import urllib.parse
from typing import Any


def is_remote(path: str) -> bool:
    """True for URLs with a scheme (`s3://...`), False for local paths."""
    return bool(urllib.parse.urlparse(path).scheme) and "://" in path


def join(base: str, *parts: str) -> str:
    """Join path components; URLs always with `/`."""
    if is_remote(base):
        return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])
    return os.path.join(base, *parts)


def with_file_name(e: OSError, path: str) -> OSError:
    """`e` naming `path` when it names no file: a failed `write()` (ENOSPC, EFBIG) names none,
    and "No space left on device" without the file leaves the user guessing which disk."""
    if e.filename is None:
        e.filename = path
    return e


def write_local_atomic(path: str, data: bytes) -> None:
    """Replace the local file `path` by `data` in one rename, creating its directory.

    The temp file is opened with mode 0666 so that the umask alone decides its mode, as for
    any other file (mkstemp's 0600 would survive the rename). Errors name `path`; the temp
    file is removed."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(
        folder, f".{os.path.basename(path)}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    )
    try:
        os.makedirs(folder, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise with_file_name(e, path) from None


def write_json(path: str, obj: Any) -> None:
    """Write `obj` as JSON to a local path (atomically) or upload it to a URL."""
    data = json.dumps(obj, indent=1, sort_keys=True)
    if not is_remote(path):
        write_local_atomic(path, data.encode())
        return
    from streaming.base.storage.upload import CloudUploader

    remote_dir, name = path.rsplit("/", 1)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, name), "w") as f:
            f.write(data)
        CloudUploader.get((tmp, remote_dir), keep_local=True, exist_ok=True).upload_file(name)


def read_json(path: str, timeout: float = 60.0) -> Any | None:
    """Read a JSON file from a local path or URL; None if it does not exist."""
    if not is_remote(path):
        try:
            with open(path) as f:
                return json.load(f)
        except FileNotFoundError:
            return None
    from streaming.base.storage.download import CloudDownloader

    with tempfile.TemporaryDirectory() as tmp:
        dest = os.path.join(tmp, "f.json")
        try:
            CloudDownloader.direct_download(path, dest, timeout)
        except FileNotFoundError:
            return None
        except Exception as e:  # botocore wraps 404s differently across versions
            msg = str(e).lower()
            if "404" in msg or "not found" in msg or "nosuchkey" in msg:
                return None
            raise
        if not os.path.exists(dest):
            return None
        with open(dest) as f:
            return json.load(f)
