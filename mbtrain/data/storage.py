"""Small-file I/O on a local directory or an object store, through streaming's own clients.

Shards go through `MDSWriter`; the few JSON files of ours (part markers, `stats.json`,
`mbtrain.json`) go through streaming's `CloudUploader` / `CloudDownloader` so that every
scheme streaming supports (s3, gs, oci, ...) works here too, with the same credentials and
`S3_ENDPOINT_URL`. Local writes are atomic (temp file + rename) because the presence of these
files is what marks work as finished.
"""

from __future__ import annotations

import json
import os
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


def write_json(path: str, obj: Any) -> None:
    """Write `obj` as JSON to a local path (atomically) or upload it to a URL."""
    data = json.dumps(obj, indent=1, sort_keys=True)
    if not is_remote(path):
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
        with os.fdopen(fd, "w") as f:
            f.write(data)
        os.replace(tmp, path)
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
