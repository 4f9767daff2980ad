"""Streaming's shared memory: which processes share it, and cleaning what crashed runs leave.

How streaming 0.13 coordinates (read from its source, `streaming/base/shared/prefix.py`,
`dataset.py`, `world.py`): at construction `World.detect()` reads only the env vars RANK,
WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE; the local leader (`rank % LOCAL_WORLD_SIZE == 0`)
registers the first free prefix N by creating `/dev/shm/{N:06}_locals`, and all processes of
that "node" share `{N:06}_*` segments and `$TMPDIR/{N:06}_*_filelock`. Between the prefix
scan and the registration it calls `torch.distributed.barrier()` on the *default* group if
one exists, and it calls `init_process_group` itself if WORLD_SIZE > 1 and none exists.

Our choice (`streaming_world`): every training process is presented to streaming as a
one-process node of a world of `dp_size` ranks (RANK=dp_rank, WORLD_SIZE=dp_size,
LOCAL_WORLD_SIZE=1, LOCAL_RANK=0), with its own local cache directory. Consequences:
* data-parallel ranks get disjoint partitions, and all model-parallel replicas of one dp rank
  (tensor/pipeline peers) compute the identical partition, hence identical batches, without
  any communication;
* no two processes share a prefix, so replicas of the same dp rank on one node never collide;
* streaming's barriers are pointless (each process is its own leader) and harmful (they run on
  the global group while processes register one after another), so during construction
  `torch.distributed.is_available` reads False for streaming, and a node-wide file lock makes
  "scan for a free prefix, then register it" atomic between our processes.
The cost is one shard cache per process instead of per node (documented in the loader).

`clean_stale_shared_memory` replaces streaming's version, which stops at the first prefix
still in use and so misses leaks behind it: here a prefix is stale when no live process maps
any of its segments (checked in /proc/*/maps), whatever its number.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import tempfile
from collections.abc import Iterator

SHM_DIR = "/dev/shm"
_SEGMENT = re.compile(r"^(\d{6})_([a-z_]+)$")
_FILELOCK = re.compile(r"^(\d{6})_(barrier_filelock|cache_filelock)$")


def _mapped_shm_names() -> set[str]:
    """Basenames of /dev/shm files mapped by any process we can inspect."""
    names = set()
    for maps in glob.glob("/proc/[0-9]*/maps"):
        try:
            with open(maps) as f:
                for line in f:
                    i = line.find(SHM_DIR + "/")
                    if i >= 0:
                        names.add(line[i + len(SHM_DIR) + 1 :].split()[0])
        except OSError:
            continue
    return names


def clean_stale_shared_memory() -> list[str]:
    """Remove streaming segments and filelocks of prefixes no live process uses.

    Only files owned by this user are touched. Returns the removed paths. Call it while no
    process of ours is between registering a prefix and mapping it (`streaming_world` holds
    the node lock for exactly that reason).
    """
    if not os.path.isdir(SHM_DIR):
        return []
    uid = os.getuid()
    by_prefix: dict[str, list[str]] = {}
    for name in os.listdir(SHM_DIR):
        m = _SEGMENT.match(name)
        if m:
            by_prefix.setdefault(m.group(1), []).append(os.path.join(SHM_DIR, name))
    tmp = tempfile.gettempdir()
    for name in os.listdir(tmp):
        m = _FILELOCK.match(name)
        if m:
            by_prefix.setdefault(m.group(1), []).append(os.path.join(tmp, name))
    if not by_prefix:
        return []
    live = {n[:6] for n in _mapped_shm_names() if _SEGMENT.match(n)}
    removed = []
    for prefix, paths in by_prefix.items():
        if prefix in live:
            continue
        for p in paths:
            try:
                if os.stat(p).st_uid == uid:
                    os.unlink(p)
                    removed.append(p)
            except OSError:
                pass
    return removed


@contextlib.contextmanager
def streaming_world(dp_rank: int, dp_size: int) -> Iterator[None]:
    """Construct StreamingDatasets inside this: one-process node `dp_rank` of `dp_size`."""
    import torch.distributed as tdist

    lock_path = os.path.join(tempfile.gettempdir(), f"mbtrain-streaming-{os.getuid()}.lock")
    env = {
        "RANK": str(dp_rank),
        "WORLD_SIZE": str(dp_size),
        "LOCAL_RANK": "0",
        "LOCAL_WORLD_SIZE": "1",
    }
    saved = {k: os.environ.get(k) for k in env}
    is_available = tdist.is_available
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            os.environ.update(env)
            tdist.is_available = lambda: False
            clean_stale_shared_memory()
            yield
        finally:
            tdist.is_available = is_available
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            fcntl.flock(lock, fcntl.LOCK_UN)
