"""`mbtrain prepare`: a thin layer that builds a PrepareConfig and calls the library
(`mbtrain.data`), here or as Slurm jobs (`--slurm`, `mbtrain.cluster.prepare`).

The config comes in layers, as a run's does: PrepareConfig's defaults <- a corpus file
(`--corpus data_prep/corpora/X.yaml`, see `mbtrain.data.corpus`) <- the flags given on the
command line; `--cluster KEY=VALUE` settings are overrides of the jobs' ClusterConfig. Both
go through the general config machinery (`mbtrain.config`): one error format, every problem
at once.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field, fields

from mbtrain.cluster.config import ClusterConfig
from mbtrain.cluster.prepare import submit_prepare
from mbtrain.config.load import build_from_layers
from mbtrain.config.sources import Layer, read_override_layer
from mbtrain.data import merge, prepare
from mbtrain.data.config import UTF8_POLICIES, PrepareConfig
from mbtrain.data.corpus import CorpusConfig, load_corpus, read_corpus_layer
from mbtrain.errors import ConfigError


def add_prepare_parser(subparsers) -> argparse.ArgumentParser:
    """Register `prepare` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "prepare",
        help="shard corpora into an MDS dataset of byte windows",
        description="Shard files, directories, globs, JSON Lines, Parquet and Arrow into an MDS "
        "dataset with train/ and val/ splits. Settings come from PrepareConfig's defaults, then "
        "a --corpus file, then the flags given. Exit code 0, or 3 if inputs were skipped.",
        epilog="examples:\n"
        "  mbtrain prepare 'corpus/**/*.jsonl.zst' --text-field text --seq-len 8192 --out data/c\n"
        "  mbtrain prepare --corpus data_prep/corpora/pystdlib.yaml --seq-len 1048576\n"
        "  mbtrain prepare docs/ --out s3://bucket/docs --workers 2\n"
        "  mbtrain prepare big/ --out data/big --workers 8 --slurm --worker-count 16 \\\n"
        "      --cluster time=02:00:00 partition=cpu\n"
        "  mbtrain prepare --out data/big --merge       # after independent --worker-index jobs",
    )
    add_prepare_arguments(p)
    p.set_defaults(func=run_prepare)
    return p


def _default(value: object) -> str:
    """A PrepareConfig default as help text: the flags' own default is None (not given), so
    that a --corpus file's value is not overridden by a default nobody typed."""
    return f"(default: {value}, or the --corpus file's)"


def add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    d = PrepareConfig()
    p.add_argument("inputs", nargs="*", help="files, directories or globs")
    p.add_argument("--corpus", help="corpus YAML with defaults (inputs, out, seq_len, ...)")
    p.add_argument("--out", "-o", help="output directory or s3://bucket/prefix")
    p.add_argument(
        "--seq-len",
        type=int,
        help=f"bytes per sample window; train windows of this length or shorter "
        f"{_default(d.seq_len)}",
    )
    p.add_argument(
        "--val-fraction",
        type=float,
        help=f"fraction of documents for val/ {_default(d.val_fraction)}",
    )
    p.add_argument(
        "--val-docs", nargs="*", help="explicit validation document or file ids (default: none)"
    )
    p.add_argument(
        "--text-field",
        help=f"field of JSONL/Parquet/Arrow records holding the text {_default(d.text_field)}",
    )
    p.add_argument(
        "--format",
        choices=["auto", "raw", "jsonl", "parquet", "arrow"],
        help=f"input format; auto: by each file's suffix {_default(d.format)}",
    )
    g = p.add_mutually_exclusive_group()
    packing = "pack" if d.pack else "pad"
    g.add_argument(
        "--pack",
        dest="pack",
        action="store_true",
        default=None,
        help=f"pack short documents back to back into full windows {_default(packing)}",
    )
    g.add_argument(
        "--pad",
        dest="pack",
        action="store_false",
        default=None,
        help="pad each document's last window alone instead",
    )
    p.add_argument(
        "--utf8-errors",
        choices=list(UTF8_POLICIES),
        help=f"invalid UTF-8 in text fields: stop, drop the record or replace it "
        f"{_default(d.utf8_errors)}",
    )
    p.add_argument(
        "--no-decompress",
        dest="decompress",
        action="store_false",
        default=None,
        help="store raw .gz/.zst/.xz/.bz2 files compressed (default: decompress them)",
    )
    p.add_argument("--workers", type=int, help=f"local worker processes {_default(d.workers)}")
    p.add_argument(
        "--worker-index",
        type=int,
        help=f"index of this job (e.g. SLURM_ARRAY_TASK_ID) {_default(d.worker_index)}",
    )
    p.add_argument(
        "--worker-count", type=int, help=f"number of independent jobs {_default(d.worker_count)}"
    )
    p.add_argument("--merge", action="store_true", help="only merge the finished parts of --out")
    p.add_argument("--exclude", nargs="*", help="globs of files to leave out (default: none)")
    p.add_argument("--seed", type=int, help=f"salt of the hash that draws val/ {_default(d.seed)}")
    p.add_argument(
        "--local-dir",
        help="staging directory for s3:// outputs (default: a temporary directory)",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=None,
        help="no progress display on stderr (default: a bar on a terminal, else a line every 10 s)",
    )
    s = p.add_argument_group("Slurm (see mbtrain/cluster/prepare.py)")
    s.add_argument(
        "--slurm",
        action="store_true",
        help="submit instead of running here: an array of --worker-count tasks, then a merge "
        "job that starts once all of them succeeded (afterok)",
    )
    s.add_argument(
        "--slurm-dir",
        help="batch scripts, logs and jobs.jsonl (default: OUT.slurm beside a local OUT, "
        "runs/prepare-NAME for s3:// outputs)",
    )
    s.add_argument(
        "--cluster",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="cluster.* settings of the jobs, e.g. time=02:00:00 partition=cpu cpus_per_task=8 "
        "(default: ClusterConfig's, one CPU per local worker)",
    )
    s.add_argument("--dry-run", action="store_true", help="with --slurm: print the scripts only")


# Flags that set the PrepareConfig field of the same name when given (argparse's None: not given).
_FLAGS = (
    "out", "exclude", "seq_len", "val_fraction", "val_docs", "text_field", "format", "pack",
    "utf8_errors", "workers", "worker_index", "worker_count", "seed", "local_dir", "progress",
    "decompress",
)  # fmt: skip


def _flags_layer(args: argparse.Namespace) -> Layer:
    given = {name: getattr(args, name, None) for name in _FLAGS}
    given = {name: value for name, value in given.items() if value is not None}
    if args.inputs:
        given = {"inputs": list(args.inputs), **given}
    return Layer(given, dict.fromkeys(given, "command line"))


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    """PrepareConfig's defaults <- the `--corpus` file <- the flags given."""
    layers = [read_corpus_layer(args.corpus)] if args.corpus else []
    layers.append(_flags_layer(args))
    corpus = build_from_layers(CorpusConfig, layers, "invalid prepare config")
    return corpus.prepare_config()


def _merge_out(args: argparse.Namespace) -> str:
    """`--merge` needs only the output: `--out`, or the corpus file's `out`."""
    if args.out:
        return args.out
    if args.corpus:
        return load_corpus(args.corpus)["out"]
    raise ConfigError("prepare.out: --merge needs --out (or a --corpus that names out)")


def run_prepare(args: argparse.Namespace) -> int:
    """Run `prepare` (or `--merge`, or submit with `--slurm`); print the summary; return the
    exit code."""
    if args.slurm:
        return _submit(args)
    result = merge(_merge_out(args)) if args.merge else prepare(config_from_args(args))
    print(result.summary(), file=sys.stderr)
    return result.exit_code


def _submit(args: argparse.Namespace) -> int:
    """`--slurm`: submit the array and the merge job (mbtrain.cluster.prepare)."""
    if args.merge or args.worker_index is not None:
        raise ConfigError("--slurm submits every worker and the merge; drop --merge/--worker-index")
    cfg = config_from_args(args)
    cluster = jobs_cluster_config(args.cluster, cfg.workers)
    result = submit_prepare(cfg, args.slurm_dir, cluster, dry_run=args.dry_run)
    if args.dry_run:
        print("\n# --- merge job ---\n".join(result))
        return 0
    array_id, merge_id = result
    print(f"submitted prepare array {array_id} ({cfg.worker_count} tasks) and merge {merge_id}")
    return 0


@dataclass
class _Jobs:
    """The schema `--cluster` overrides: one `cluster` section, as in a run config."""

    cluster: ClusterConfig = field(default_factory=ClusterConfig)


def jobs_cluster_config(pairs: list[str], workers: int) -> ClusterConfig:
    """ClusterConfig defaults <- one CPU per local worker <- `--cluster KEY=VALUE` overrides
    (KEY or cluster.KEY; a single value of a list setting is a list of one)."""
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--cluster {pair!r}: expected KEY=VALUE, e.g. time=02:00:00")
    dotted = {p: p if p.startswith("cluster.") else f"cluster.{p}" for p in pairs}
    layer = read_override_layer(list(dotted.values()))
    # Name each problem's source as it was typed, not as it was passed on.
    typed = {f"override {d!r}": f"--cluster {p!r}" for p, d in dotted.items()}
    layer.origins = {k: typed.get(v, v) for k, v in layer.origins.items()}
    lists = {f.name for f in fields(ClusterConfig) if f.default_factory is list}
    given = layer.values.get("cluster", {})
    for key in lists & set(given):  # `sbatch_extra=--exclusive`: one option
        if not isinstance(given[key], list):
            given[key] = [given[key]]
    defaults = Layer({"cluster": {"cpus_per_task": workers}})
    return build_from_layers(_Jobs, [defaults, layer], "invalid --cluster").cluster
