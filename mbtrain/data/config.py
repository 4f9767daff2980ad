"""Typed configs of the data package: one for `prepare`, one for the training loader.

Two configs, because the two halves run at different times on different machines: a corpus is
prepared once (often by a Slurm array), then read by many runs. `DataConfig` deliberately has
no `seq_len`: the model owns it, and `build_loader` checks the dataset against the model's value
instead of trusting a second copy that could drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mbtrain.config.checks import Checks

UTF8_POLICIES = ("fail", "skip", "replace")
FORMATS = ("auto", "raw", "jsonl", "parquet", "arrow")
ON_CHANGE = ("refuse", "restart")
SHUFFLE_ALGOS = ("py1e", "py1br", "py1b", "py1s", "py2s", "naive")


@dataclass
class PrepareConfig:
    """How to turn raw corpora into an MDS dataset of byte windows (`mbtrain prepare`)."""

    inputs: list[str] = field(default_factory=list)
    """Files, directories (walked recursively, hidden entries skipped) and globs (`**` allowed)."""
    out: str = ""
    """Output directory, local path or `s3://bucket/prefix`; gets `train/`, `val/`, `stats.json`."""
    seq_len: int = 8192
    """Bytes per sample window; must equal the model's `seq_len` at training time."""
    val_fraction: float = 0.01
    """Fraction of documents (by a hash of their id) that go to `val/`; ignored if `val_docs`."""
    val_docs: list[str] = field(default_factory=list)
    """Explicit validation documents: document ids or source-file ids (all of that file's docs)."""
    exclude: list[str] = field(default_factory=list)
    """Globs (relative to each input's root, `**` allowed) of files to leave out."""
    text_field: str = "text"
    """Field/column holding the document in JSON Lines, Parquet and Arrow inputs."""
    format: str = "auto"
    """Input format: `auto` (by suffix), or force `raw`, `jsonl`, `parquet`, `arrow` for all."""
    pack: bool = True
    """Pack short documents (and tails) back to back into full windows; False pads each alone."""
    decompress: bool = True
    """Raw files ending in .gz, .zst, .xz or .bz2 are decompressed (one document each); False
    stores their compressed bytes as they are."""
    utf8_errors: str = "fail"
    """Invalid UTF-8 in text fields: `fail` (stop), `skip` (drop the record), `replace` (U+FFFD)."""
    workers: int = 1
    """Local worker processes for this job; each writes its own part, merged at the end."""
    worker_index: int = 0
    """Index of this job among `worker_count` independent jobs (e.g. `$SLURM_ARRAY_TASK_ID`)."""
    worker_count: int = 1
    """Number of independent jobs; with more than one, run `merge` after all of them finished."""
    compression: str = "zstd"
    """Shard compression understood by streaming (`zstd`, `zstd:<level>`, or empty for none)."""
    size_limit: int = 1 << 26
    """Uncompressed bytes per shard before a new shard is started."""
    hashes: list[str] = field(default_factory=lambda: ["xxh64"])
    """Shard hash algorithms recorded in index.json (sorted; streaming names)."""
    seed: int = 0
    """Salt of the document-id hash that draws the validation split."""
    local_dir: str | None = None
    """Staging directory for remote (`s3://`) outputs; a temporary directory if None."""
    progress: bool = True
    """Show the input bytes this job has read on stderr: one tqdm bar on a terminal (drawn by
    the parent process for all its workers), elsewhere (a Slurm log, a pipe) a plain line every
    10 seconds."""

    def validate(self) -> list[str]:
        """Return every problem with this config, one message per problem."""
        c = Checks("prepare")
        c.require(bool(self.inputs), "inputs", "give at least one file, directory or glob")
        c.require(bool(self.out), "out", "output directory or s3:// URL is required")
        c.at_least("seq_len", self.seq_len, 1)
        c.in_range("val_fraction", self.val_fraction, 0, 1, high_open=True)
        c.one_of("utf8_errors", self.utf8_errors, UTF8_POLICIES)
        c.one_of("format", self.format, FORMATS)
        c.at_least("workers", self.workers, 1)
        if c.at_least("worker_count", self.worker_count, 1):
            c.in_range("worker_index", self.worker_index, 0, self.worker_count, high_open=True)
        c.require(
            max(self.seq_len, 1) <= self.size_limit < 2**32,
            "size_limit",
            f"must be in [seq_len ({self.seq_len}), 2**32), got {self.size_limit}",
        )
        c.require(
            not self.compression or _valid_compression(self.compression),
            "compression",
            "must be one streaming reads: zstd[:1-22], gz[:0-9], br[:0-11], bz2[:1-9], snappy, "
            f"or '' for none; got {self.compression!r}",
        )
        c.require(
            list(self.hashes) == sorted(set(self.hashes)),
            "hashes",
            f"must be unique and sorted, got {self.hashes}",
        )
        return c.errors


@dataclass
class DataConfig:
    """Which prepared dataset a training run reads, and how (`data:` section of a run config)."""

    train: str = ""
    """Train split directory of a prepared dataset (`out/train`), local or `s3://`."""
    val: str | None = None
    """Validation split directory (`out/val`); None disables validation."""
    mix: list[dict] = field(default_factory=list)
    """Instead of `train`: streams `{path: ..., proportion: 0.7}` mixed by proportion."""
    shuffle: bool = True
    """Shuffle training samples (deterministic from the run seed); val is never shuffled."""
    num_workers: int = 2
    """DataLoader worker processes per rank."""
    local_cache: str | None = None
    """Directory for downloaded/decompressed shards; `$TMPDIR/mbtrain-cache` if None."""
    shuffle_block_size: int | None = None
    """Streaming shuffle block size in samples; streaming's default if None."""
    shuffle_algo: str = "py1e"
    """Streaming shuffle algorithm (`py1e`, `py1br`, `py1s`, `py2s`, `naive`)."""
    prefetch_factor: int = 2
    """Batches prefetched per DataLoader worker."""
    on_change: str = "refuse"
    """On resume, when the training data differs from the checkpoint's (another dataset, one
    prepared again from other inputs, other mix settings): `refuse` (the saved position
    belongs to other data), or `restart` (keep weights and optimizer, read this data from its
    beginning). Checked against the data identity each checkpoint records."""

    def validate(self) -> list[str]:
        """Return every problem with this config, one message per problem."""
        c = Checks("data")
        c.require(
            bool(self.train or self.mix),
            "train",
            "path of a prepared train split (e.g. out/train) is required",
        )
        for i, m in enumerate(self.mix):
            if not isinstance(m, dict) or not m.get("path"):
                c.fail(f"mix[{i}]", f"needs a `path`, got {m!r}")
                continue
            unknown = sorted(set(m) - {"path", "proportion", "repeat", "choose"})
            c.require(
                not unknown,
                f"mix[{i}]",
                f"unknown keys {unknown}; valid: path, proportion, repeat, choose",
            )
            p = m.get("proportion")
            c.require(
                p is None or (isinstance(p, (int, float)) and p > 0),
                f"mix[{i}].proportion",
                f"must be > 0, got {p!r}",
            )
        c.at_least("num_workers", self.num_workers, 0)
        if self.shuffle_block_size is not None:
            c.at_least("shuffle_block_size", self.shuffle_block_size, 1)
        c.one_of("shuffle_algo", self.shuffle_algo, SHUFFLE_ALGOS)
        c.at_least("prefetch_factor", self.prefetch_factor, 1)
        c.one_of("on_change", self.on_change, ON_CHANGE)
        return c.errors


_LEVELS = {"zstd": range(1, 23), "gz": range(0, 10), "br": range(0, 12), "bz2": range(1, 10)}
"""Levels streaming's `is_compression` accepts (checked against mosaicml-streaming 0.13)."""


def _valid_compression(spec: str) -> bool:
    name, sep, level = spec.partition(":")
    if name == "snappy":
        return not sep
    if name not in _LEVELS:
        return False
    if not sep:
        return True
    return level.isdigit() and int(level) in _LEVELS[name]
