"""Typed configs of the data package: one for `prepare`, one for the training loader.

Two configs, because the two halves run at different times on different machines: a corpus is
prepared once (often by a Slurm array), then read by many runs. `DataConfig` deliberately has
no `seq_len`: the model owns it, and `build_loader` checks the dataset against the model's value
instead of trusting a second copy that could drift.
"""

from __future__ import annotations

from dataclasses import dataclass, field

UTF8_POLICIES = ("fail", "skip", "replace")
FORMATS = ("auto", "raw", "jsonl", "parquet", "arrow")
ON_CHANGE = ("refuse", "restart")


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
    """Show a tqdm progress bar (bytes read) per worker."""

    def validate(self) -> list[str]:
        """Return every problem with this config, one message per problem."""
        errs = []
        if not self.inputs:
            errs.append("prepare.inputs: give at least one file, directory or glob")
        if not self.out:
            errs.append("prepare.out: output directory or s3:// URL is required")
        if self.seq_len < 1:
            errs.append(f"prepare.seq_len: must be >= 1, got {self.seq_len}")
        if not 0.0 <= self.val_fraction < 1.0:
            errs.append(f"prepare.val_fraction: must be in [0, 1), got {self.val_fraction}")
        if self.utf8_errors not in UTF8_POLICIES:
            errs.append(
                f"prepare.utf8_errors: one of {list(UTF8_POLICIES)}, got {self.utf8_errors!r}"
            )
        if self.format not in FORMATS:
            errs.append(f"prepare.format: one of {list(FORMATS)}, got {self.format!r}")
        if self.workers < 1:
            errs.append(f"prepare.workers: must be >= 1, got {self.workers}")
        if self.worker_count < 1:
            errs.append(f"prepare.worker_count: must be >= 1, got {self.worker_count}")
        if not 0 <= self.worker_index < max(self.worker_count, 1):
            errs.append(
                f"prepare.worker_index: must be in [0, {self.worker_count}), got {self.worker_index}"
            )
        if self.size_limit < max(self.seq_len, 1) or self.size_limit >= 2**32:
            errs.append(
                f"prepare.size_limit: must be in [seq_len ({self.seq_len}), 2**32), got {self.size_limit}"
            )
        if self.compression and not _valid_compression(self.compression):
            errs.append(
                f"prepare.compression: one streaming reads: zstd[:1-22], gz[:0-9], br[:0-11], "
                f"bz2[:1-9], snappy, or '' for none; got {self.compression!r}"
            )
        if list(self.hashes) != sorted(set(self.hashes)):
            errs.append(f"prepare.hashes: must be unique and sorted, got {self.hashes}")
        return errs


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
        errs = []
        if not self.train and not self.mix:
            errs.append("data.train: path of a prepared train split (e.g. out/train) is required")
        for i, m in enumerate(self.mix):
            if not isinstance(m, dict) or not m.get("path"):
                errs.append(f"data.mix[{i}]: needs a `path`, got {m!r}")
                continue
            unknown = set(m) - {"path", "proportion", "repeat", "choose"}
            if unknown:
                errs.append(
                    f"data.mix[{i}]: unknown keys {sorted(unknown)}; valid: path, proportion, repeat, choose"
                )
            p = m.get("proportion")
            if p is not None and (not isinstance(p, (int, float)) or p <= 0):
                errs.append(f"data.mix[{i}].proportion: must be > 0, got {p!r}")
        if self.num_workers < 0:
            errs.append(f"data.num_workers: must be >= 0, got {self.num_workers}")
        if self.shuffle_block_size is not None and self.shuffle_block_size < 1:
            errs.append(f"data.shuffle_block_size: must be >= 1, got {self.shuffle_block_size}")
        if self.shuffle_algo not in ("py1e", "py1br", "py1b", "py1s", "py2s", "naive"):
            errs.append(
                f"data.shuffle_algo: one of py1e, py1br, py1b, py1s, py2s, naive; got {self.shuffle_algo!r}"
            )
        if self.prefetch_factor < 1:
            errs.append(f"data.prefetch_factor: must be >= 1, got {self.prefetch_factor}")
        if self.on_change not in ON_CHANGE:
            errs.append(f"data.on_change: one of {', '.join(ON_CHANGE)}; got {self.on_change!r}")
        return errs


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
