"""The training loader: prepared byte windows -> batches `{"x", "mask", "doc_start", ...}`.

Built on streaming's `StreamingDataset` (deterministic shuffle from the run seed, exact
mid-epoch resume, mixing by proportion via `Stream`). What this module adds:
* the mapping from the training topology to streaming's world (see `shm.py`): streaming sees
  `dp_size` ranks, so dp ranks get disjoint samples and every tensor/pipeline peer of a dp rank
  computes the same batches by itself;
* checks before anything is read: the split exists, is complete, and was prepared with the
  model's seq_len or a longer one (each prepared sample is then cut into windows of the
  model's length, document boundaries and patch alignment kept: one dataset serves every
  context length up to the prepared one);
* its own `state_dict`: streaming's `StreamingDataLoader.state_dict` multiplies by the world
  size read from the env at save time, which is the global world, not our dp world.

Each process keeps its own shard cache (`<local_cache>/<dataset>/<rank>`), the price of not
sharing shared memory between model-parallel peers. Collating and cutting windows is
`collate.py`; the checks run before anything is read, `splits.py`.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator

import torch

from mbtrain.data import storage
from mbtrain.data.collate import Collate, windows_per_sample
from mbtrain.data.config import DataConfig
from mbtrain.data.shm import streaming_world
from mbtrain.data.splits import check_split, train_specs
from mbtrain.errors import DataError

_instances = itertools.count()


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


class ByteLoader:
    """Micro-batches of one split for one dp rank, with exact, checkpointable position.

    Each prepared sample gives `windows` windows of the model's length (`windows_per_sample`),
    so one batch of samples gives `windows` micro-batches; the position is the samples of the
    batches wholly handed out plus the micro-batches handed out of the current one (streaming
    resumes on batch boundaries only: another count would move samples between ranks).

    `for batch in loader` runs one epoch (the next one each time); `iter_forever()` runs epochs
    back to back. `state_dict()` may be called between any two batches; `load_state_dict()` on a
    freshly built loader makes it continue with exactly the batches the saving run would have
    produced next (same dp_size, micro batch and seed).
    """

    def __init__(
        self,
        dataset,
        loader,
        *,
        dp_size: int,
        micro_batch_size: int,
        seq_len: int,
        windows: int = 1,
        paths: list[str] | None = None,
    ):
        self.dataset = dataset
        self.loader = loader
        self.dp_size = dp_size
        self.micro_batch_size = micro_batch_size
        self.seq_len = seq_len
        self.windows = windows
        self.paths = list(paths or [])
        self._done = 0  # samples of the current epoch's batches wholly handed out
        self._micro = 0  # micro-batches handed out of the batch after those
        self._skip = 0  # micro-batches of the first batch to pass over after a resume
        self._resumed = False

    def __len__(self) -> int:
        return len(self.loader) * self.windows

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self._done, self._micro = 0, 0
        skip, self._skip = self._skip, 0
        for batch in self._batches():
            for j in range(skip, self.windows):
                self._micro = j + 1
                if j + 1 == self.windows:
                    self._done += self.micro_batch_size
                    self._micro = 0
                yield {k: v[j] if v.dim() == 3 else v for k, v in batch.items()}
            skip = 0

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        """The underlying batches; a dataset that vanished or became unreadable is named."""
        it = iter(self.loader)
        while True:
            try:
                batch = next(it)
            except StopIteration:
                return
            except Exception as e:
                raise self._read_error(e) from e
            yield batch

    def _read_error(self, error: Exception) -> Exception:
        """A DataError naming the split that can no longer be read, or `error` itself."""
        for path in self.paths:
            try:
                gone = storage.read_json(storage.join(path, "index.json")) is None
                why = "index.json is missing"
            except (OSError, ValueError) as e:
                gone, why = True, f"index.json: {e}"
            if gone:
                return DataError(
                    f"{path}: the dataset can no longer be read ({why}) while training reads "
                    f"it ({type(error).__name__}: {str(error).splitlines()[0][:200]})"
                )
        return error

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
            "version": 2,
            "dp_size": self.dp_size,
            "micro_batch_size": self.micro_batch_size,
            "seq_len": self.seq_len,
            "windows": self.windows,
            "micro": self._micro,
            "dataset": self.dataset.state_dict(self._done * self.dp_size, False),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state` on the next iteration (call before iterating)."""
        if state.get("version") not in (1, 2):
            raise DataError(f"loader state of unknown version {state.get('version')!r}")
        self.dataset.load_state_dict(state["dataset"])
        micro, saved_len = int(state.get("micro", 0)), int(state.get("seq_len", self.seq_len))
        # Another window length: skip the bytes the saved micro-batches covered (rounded down:
        # a few bytes seen twice rather than never).
        self._skip = min(micro * saved_len // self.seq_len, self.windows - 1) if micro else 0
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
        specs = train_specs(cfg)
    rank, n = _global_rank(dp_rank), next(_instances)
    streams, prepared = [], set()
    for m in specs:
        meta = check_split(m["path"], seq_len)
        prepared.add(meta["seq_len"])
        streams.append(
            Stream(
                remote=m["path"],
                local=_cache_dir(cfg.local_cache, m["path"], meta, rank, n),
                proportion=m.get("proportion"),
                repeat=m.get("repeat"),
                choose=m.get("choose"),
            )
        )
    if len(prepared) > 1:
        raise DataError(
            f"data.mix: its datasets were prepared with different seq_len "
            f"({', '.join(map(str, sorted(prepared)))}); prepare them with one --seq-len"
        )
    windows = windows_per_sample(prepared.pop(), seq_len)
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
        collate_fn=Collate(seq_len, align, windows),
        drop_last=drop_last,
        prefetch_factor=cfg.prefetch_factor if cfg.num_workers > 0 else None,
        persistent_workers=False,
    )
    return ByteLoader(
        ds,
        loader,
        dp_size=dp_size,
        micro_batch_size=micro_batch_size,
        seq_len=seq_len,
        windows=windows,
        paths=[m["path"] for m in specs],
    )
