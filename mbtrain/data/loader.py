"""The training loader: prepared byte windows -> batches `{"x", "mask", "doc_start", ...}`.

Built on streaming's `StreamingDataset` (deterministic shuffle from the run seed, exact
mid-epoch resume, mixing by proportion via `Stream`). What this module adds:
* the mapping from the training topology to streaming's world (see `shm.py`): streaming sees
  `dp_size` ranks, so dp ranks get disjoint samples and every tensor/pipeline peer of a dp rank
  computes the same batches by itself;
* checks before anything is read: the split exists, is complete, and was prepared with the
  model's seq_len;
* its own `state_dict`: streaming's `StreamingDataLoader.state_dict` multiplies by the world
  size read from the env at save time, which is the global world, not our dp world.

Each process keeps its own shard cache (`<local_cache>/<dataset>/<rank>`), the price of not
sharing shared memory between model-parallel peers.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator

import numpy as np
import torch

from mbtrain.data import storage
from mbtrain.data.config import DataConfig
from mbtrain.data.shm import streaming_world
from mbtrain.errors import DataError

_instances = itertools.count()


def check_split(path: str, seq_len: int | None, need_samples: bool = True) -> dict:
    """Read and check `mbtrain.json` of a split directory; DataError with a clear line if unusable."""
    meta = storage.read_json(storage.join(path, "mbtrain.json"))
    if meta is None:
        if storage.read_json(storage.join(path, "index.json")) is not None:
            raise DataError(
                f"{path}: dataset is incomplete (no mbtrain.json; prepare was interrupted or is "
                "still running); re-run prepare (finished parts are skipped) and merge"
            )
        raise DataError(f"{path}: no prepared dataset here; run `mbtrain prepare` first")
    if not meta.get("complete"):
        raise DataError(
            f"{path}: dataset is incomplete (being re-prepared or interrupted); re-run prepare and merge"
        )
    if seq_len is not None and meta.get("seq_len") != seq_len:
        raise DataError(
            f"{path}: prepared with seq_len {meta.get('seq_len')}, but the model's seq_len is "
            f"{seq_len}; re-run prepare with --seq-len {seq_len}"
        )
    if need_samples and not meta.get("samples"):
        raise DataError(f"{path}: the split has no samples")
    return meta


def _global_rank(default: int) -> int:
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        return tdist.get_rank()
    return int(os.environ.get("RANK", default))


def _cache_dir(cfg_cache: str | None, path: str, meta: dict, rank: int, n: int) -> str:
    base = cfg_cache or os.path.join(tempfile.gettempdir(), "mbtrain-cache")
    # The dataset id changes whenever the dataset is re-prepared: a stale cache is never reused.
    key = hashlib.sha1(f"{path}\0{meta.get('dataset_id')}".encode()).hexdigest()[:16]
    # Streaming refuses a local directory another live dataset uses; two runs on one node
    # reading the same dataset would collide without the process id. Removed at exit.
    out = os.path.join(base, key, f"rank{rank}.pid{os.getpid()}" + (f".{n}" if n else ""))
    atexit.register(shutil.rmtree, out, ignore_errors=True)
    return out


def collate_aligned(samples: list[dict], seq_len: int, align: int) -> dict[str, torch.Tensor]:
    """Like `collate`, with every document piece that starts a document laid out on a multiple
    of `align` (MegaByte's patch size, for document masking: every patch then belongs to one
    document). The gap after a document (at most align-1 bytes) is padding, masked out of the
    loss; what no longer fits at the end of a window (at most align-1 bytes per document in
    it) is dropped from this step: a window of several short documents loses a little,
    a window inside one long document nothing. `dropped` counts those bytes."""
    b = len(samples)
    x = np.zeros((b, seq_len), np.int64)
    seg = np.full((b, seq_len), -1, np.int64)
    doc_start = np.zeros((b, seq_len), np.bool_)
    dropped = 0
    for i, s in enumerate(samples):
        data = np.frombuffer(s["data"], np.uint8)
        pos = src = 0
        for j, (ln, off) in enumerate(zip(s["lengths"], s["offsets"])):
            ln, off = int(ln), int(off)
            if j:
                pos = -(-pos // align) * align
            take = max(0, min(ln, seq_len - pos))
            x[i, pos : pos + take] = data[src : src + take]
            seg[i, pos : pos + take] = j
            if take and off == 0:
                doc_start[i, pos] = True
            dropped += ln - take
            pos += take
            src += ln
    return {
        "x": torch.from_numpy(x),
        "mask": torch.from_numpy(seg >= 0),
        "doc_start": torch.from_numpy(doc_start),
        "segment_ids": torch.from_numpy(seg),
        "dropped": torch.tensor(dropped),
    }


def collate(samples: list[dict], seq_len: int) -> dict[str, torch.Tensor]:
    """Pad windows to seq_len; masks from the recorded document pieces.

    x: (B, T) int64 byte values, 0 at padding; mask: (B, T) False at padding; doc_start: (B, T)
    True at the first byte of a document; segment_ids: (B, T) index of the document piece in
    the window, -1 at padding (pieces of different documents never attend to each other if the
    model masks by segment).

    No Python loop per piece or per byte: the windows are joined into one byte string, segment
    ids and document starts are computed for that string from the concatenated piece lengths,
    and full windows (every packed window but a part's last) are reshaped, not copied row by row.
    """
    b = len(samples)
    datas = [s["data"] for s in samples]
    ns = np.fromiter(map(len, datas), np.int64, b)
    if b and ns.max() > seq_len:
        raise DataError(f"sample of {int(ns.max())} bytes exceeds seq_len {seq_len}")
    flat = np.frombuffer(b"".join(datas), np.uint8)
    lengths = [np.asarray(s["lengths"], np.int64) for s in samples]
    counts = np.fromiter(map(len, lengths), np.int64, b)
    lens = np.concatenate(lengths) if b else np.zeros(0, np.int64)
    offs = np.concatenate([np.asarray(s["offsets"], np.int64) for s in samples]) if b else lens
    if int(lens.sum()) != len(flat):
        raise DataError("sample pieces do not add up to the window length")
    first = np.cumsum(counts) - counts  # index of each sample's first piece
    piece_j = np.arange(len(lens)) - np.repeat(first, counts)  # piece index within its window
    seg_flat = np.repeat(piece_j, lens)
    start_flat = np.zeros(len(flat), np.bool_)
    start_flat[(np.cumsum(lens) - lens)[offs == 0]] = True
    if b and ns.min() == seq_len:
        x = flat.astype(np.int64).reshape(b, seq_len)
        mask = np.ones((b, seq_len), np.bool_)
        seg = seg_flat.reshape(b, seq_len)
        doc_start = start_flat.reshape(b, seq_len)
    else:
        x = np.zeros((b, seq_len), np.int64)
        mask = np.arange(seq_len) < ns[:, None]
        seg = np.full((b, seq_len), -1, np.int64)
        doc_start = np.zeros((b, seq_len), np.bool_)
        pos = 0
        for i, n in enumerate(ns.tolist()):
            x[i, :n] = flat[pos : pos + n]
            seg[i, :n] = seg_flat[pos : pos + n]
            doc_start[i, :n] = start_flat[pos : pos + n]
            pos += n
    return {
        "x": torch.from_numpy(x),
        "mask": torch.from_numpy(mask),
        "doc_start": torch.from_numpy(doc_start),
        "segment_ids": torch.from_numpy(seg),
    }


class _Collate:
    """Picklable collate_fn for DataLoader workers."""

    def __init__(self, seq_len: int, align: int = 1):
        self.seq_len, self.align = seq_len, align

    def __call__(self, samples):
        if self.align > 1:
            return collate_aligned(samples, self.seq_len, self.align)
        return collate(samples, self.seq_len)


class ByteLoader:
    """Batches of one split for one dp rank, with exact, checkpointable position.

    `for batch in loader` runs one epoch (the next one each time); `iter_forever()` runs epochs
    back to back. `state_dict()` may be called between any two batches; `load_state_dict()` on a
    freshly built loader makes it continue with exactly the batches the saving run would have
    produced next (same dp_size, micro batch and seed).
    """

    def __init__(self, dataset, loader, *, dp_size: int, micro_batch_size: int, seq_len: int):
        self.dataset = dataset
        self.loader = loader
        self.dp_size = dp_size
        self.micro_batch_size = micro_batch_size
        self.seq_len = seq_len
        self._yielded = 0  # samples handed out by the current epoch's iterator
        self._resumed = False

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self._yielded = 0
        for batch in self.loader:
            self._yielded += batch["x"].shape[0]
            yield batch

    def iter_forever(self) -> Iterator[dict[str, torch.Tensor]]:
        """Epoch after epoch; DataError if an epoch yields no batch (dataset too small)."""
        empty_ok = self._resumed  # a resume exactly at an epoch's end yields one empty epoch
        while True:
            n = 0
            for batch in self:
                n += 1
                yield batch
            if n == 0:
                if not empty_ok:
                    raise DataError(
                        f"an epoch yields no batch of {self.micro_batch_size} per rank "
                        f"with {self.dp_size} data-parallel ranks; the dataset is too small"
                    )
                empty_ok = False

    @property
    def epoch(self) -> int:
        """Epoch of the current (or last started) pass."""
        return max(int(self.dataset.next_epoch) - 1, 0)

    def state_dict(self) -> dict:
        """Position to save in a checkpoint."""
        return {
            "version": 1,
            "dp_size": self.dp_size,
            "micro_batch_size": self.micro_batch_size,
            "dataset": self.dataset.state_dict(self._yielded * self.dp_size, False),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` on the next iteration (call before iterating)."""
        if state.get("version") != 1:
            raise DataError(f"loader state of unknown version {state.get('version')!r}")
        self.dataset.load_state_dict(state["dataset"])
        self._resumed = True


def build_loader(
    cfg: DataConfig,
    split: str,
    seq_len: int,
    micro_batch_size: int,
    dp_rank: int,
    dp_size: int,
    seed: int,
    drop_last: bool = True,
    align: int = 1,
) -> ByteLoader:
    """Loader of `split` ("train" or "val") for data-parallel rank `dp_rank` of `dp_size`;
    `align` > 1 lays documents out on multiples of it (`collate_aligned`)."""
    from streaming import Stream, StreamingDataset

    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if not 0 <= dp_rank < dp_size:
        raise ValueError(f"dp_rank {dp_rank} not in [0, {dp_size})")
    if split == "val":
        if not cfg.val:
            raise DataError("data.val: no validation split configured")
        specs = [{"path": cfg.val}]
    else:
        specs = list(cfg.mix) if cfg.mix else [{"path": cfg.train}]
    rank, n = _global_rank(dp_rank), next(_instances)
    streams = []
    for m in specs:
        meta = check_split(m["path"], seq_len)
        streams.append(
            Stream(
                remote=m["path"],
                local=_cache_dir(cfg.local_cache, m["path"], meta, rank, n),
                proportion=m.get("proportion"),
                repeat=m.get("repeat"),
                choose=m.get("choose"),
            )
        )
    shuffle = cfg.shuffle and split == "train"
    with streaming_world(dp_rank, dp_size):
        ds = StreamingDataset(
            streams=streams,
            batch_size=micro_batch_size,
            shuffle=shuffle,
            shuffle_seed=seed,
            shuffle_algo=cfg.shuffle_algo,
            shuffle_block_size=cfg.shuffle_block_size,
        )
    loader = torch.utils.data.DataLoader(
        ds,
        batch_size=micro_batch_size,
        num_workers=cfg.num_workers,
        collate_fn=_Collate(seq_len, align),
        drop_last=drop_last,
        prefetch_factor=cfg.prefetch_factor if cfg.num_workers > 0 else None,
        persistent_workers=False,
    )
    return ByteLoader(
        ds, loader, dp_size=dp_size, micro_batch_size=micro_batch_size, seq_len=seq_len
    )


def iter_documents(path: str, cache: str | None = None) -> Iterator[tuple[str, bytes]]:
    """Reconstruct the documents of a split, in stored order: `(doc_id, original bytes)`.

    Pieces of a document are consecutive in storage (one writer wrote them in order), so this
    streams with one document in memory. Raises DataError if pieces do not line up.
    """
    from streaming import StreamingDataset

    if not check_split(path, None, need_samples=False).get("samples"):
        return
    tmp = tempfile.mkdtemp(prefix="mbtrain-read-", dir=cache)
    try:
        with streaming_world(0, 1):
            ds = StreamingDataset(remote=path, local=tmp, shuffle=False, batch_size=1)
        cur_id, cur, size = None, bytearray(), 0
        for i in range(ds.num_samples):
            s = ds.get_item(i)
            data, pos = s["data"], 0
            for doc_id, off, ln, dsz in zip(
                s["doc_ids"], s["offsets"], s["lengths"], s["doc_sizes"]
            ):
                if doc_id != cur_id:
                    if cur_id is not None:
                        raise DataError(
                            f"{path}: document {cur_id} ends at {len(cur)} of {size} bytes"
                        )
                    cur_id, cur, size = doc_id, bytearray(), int(dsz)
                if off != len(cur):
                    raise DataError(
                        f"{path}: document {doc_id} piece at {off}, expected {len(cur)}"
                    )
                cur += data[pos : pos + ln]
                pos += int(ln)
                if len(cur) == size:
                    yield cur_id, bytes(cur)
                    cur_id = None
        if cur_id is not None:
            raise DataError(f"{path}: document {cur_id} is truncated")
        del ds
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def iter_val_bytes(path: str, max_bytes: int | None = None) -> bytes:
    """The raw bytes of a split's documents, concatenated in stored order (e.g. for gzip)."""
    out = bytearray()
    for _, data in iter_documents(path):
        out += data
        if max_bytes is not None and len(out) >= max_bytes:
            return bytes(out[:max_bytes])
    return bytes(out)
