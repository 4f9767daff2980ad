"""`mbtrain prepare` argument parsing: a thin layer that builds a PrepareConfig and calls the
library. A corpus YAML (`--corpus data_prep/corpora/X.yaml`) supplies defaults (inputs, out,
seq_len, ...); flags given on the command line override it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import sysconfig

from mbtrain.data.config import UTF8_POLICIES, PrepareConfig
from mbtrain.errors import ConfigError


def add_prepare_parser(subparsers) -> argparse.ArgumentParser:
    """Register `prepare` on an argparse subparsers object."""
    p = subparsers.add_parser(
        "prepare",
        help="shard corpora into an MDS dataset of byte windows",
        description="Shard files, directories, globs, JSON Lines, Parquet and Arrow into an MDS "
        "dataset with train/ and val/ splits. Exit code 0, or 3 if inputs were skipped.",
    )
    add_prepare_arguments(p)
    p.set_defaults(func=run_prepare)
    return p


def add_prepare_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="*", help="files, directories or globs")
    p.add_argument("--corpus", help="corpus YAML with defaults (inputs, out, seq_len, ...)")
    p.add_argument("--out", help="output directory or s3://bucket/prefix")
    p.add_argument("--seq-len", type=int, help="bytes per sample window")
    p.add_argument("--val-fraction", type=float, help="fraction of documents for val/")
    p.add_argument("--val-docs", nargs="*", help="explicit validation document or file ids")
    p.add_argument("--text-field", help="field of JSONL/Parquet/Arrow records holding the text")
    p.add_argument("--format", choices=["auto", "raw", "jsonl", "parquet", "arrow"])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--pack", dest="pack", action="store_true", default=None, help="pack short docs")
    g.add_argument("--pad", dest="pack", action="store_false", help="pad each doc's last window")
    p.add_argument("--utf8-errors", choices=list(UTF8_POLICIES))
    p.add_argument(
        "--no-decompress",
        dest="decompress",
        action="store_false",
        default=None,
        help="store raw .gz/.zst/.xz/.bz2 files compressed (default: decompress them)",
    )
    p.add_argument("--workers", type=int, help="local worker processes")
    p.add_argument("--worker-index", type=int, help="index of this job (e.g. SLURM_ARRAY_TASK_ID)")
    p.add_argument("--worker-count", type=int, help="number of independent jobs")
    p.add_argument("--merge", action="store_true", help="only merge the finished parts of --out")
    p.add_argument("--exclude", nargs="*", help="globs of files to leave out")
    p.add_argument("--seed", type=int)
    p.add_argument("--local-dir", help="staging directory for s3:// outputs")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=None)
    s = p.add_argument_group("Slurm (see mbtrain/cluster/prepare.py)")
    s.add_argument(
        "--slurm",
        action="store_true",
        help="submit instead of running here: an array of --worker-count tasks, then a merge "
        "job that starts once all of them succeeded (afterok)",
    )
    s.add_argument("--slurm-dir", help="batch scripts, logs and jobs.jsonl [OUT.slurm]")
    s.add_argument(
        "--cluster",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="cluster.* settings of the jobs, e.g. time=02:00:00 partition=cpu cpus_per_task=8",
    )
    s.add_argument("--dry-run", action="store_true", help="with --slurm: print the scripts only")


def load_corpus(path: str) -> dict:
    """Read a corpus YAML; in inputs `{stdlib}` expands to this Python's standard library and
    `{corpora}` to $MBTRAIN_CORPORA (default data/corpora, where fetch_corpora.py writes).
    Every problem of the file is a one-line ConfigError naming it (and the line, where YAML
    knows it); YAML tags that build Python objects are refused: a corpus file is data."""
    obj = _read_yaml(path)
    known = set(PrepareConfig.__dataclass_fields__)
    unknown = sorted(set(obj) - known - {"name", "description"})
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}; valid: {sorted(known)}")
    problems = _type_problems(obj)
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    subs = {
        "stdlib": sysconfig.get_paths()["stdlib"],
        # Where data_prep/corpora/fetch_corpora.py puts the benchmark corpora.
        "corpora": os.environ.get("MBTRAIN_CORPORA", os.path.join("data", "corpora")),
    }
    obj["inputs"] = [os.path.expanduser(s.format(**subs)) for s in obj.get("inputs", [])]
    obj.pop("name", None)
    obj.pop("description", None)
    return obj


def _read_yaml(path: str) -> dict:
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            obj = yaml.safe_load(f)
    except OSError as e:
        raise ConfigError(f"--corpus {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"--corpus {path}: not UTF-8 text") from None
    except yaml.constructor.ConstructorError as e:  # e.g. `!!python/object/apply:os.system`
        tag = re.search(r"tag '([^']*)'", str(e.problem))
        what = tag.group(1).replace("tag:yaml.org,2002:", "!!") if tag else "this tag"
        raise ConfigError(
            f"{_where(path, e)}: {what} is not allowed; a corpus file holds plain data only "
            "(strings, numbers, booleans, lists, mappings)"
        ) from None
    except yaml.YAMLError as e:
        raise ConfigError(
            f"{_where(path, e)}: not valid YAML ({getattr(e, 'problem', e)})"
        ) from None
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise ConfigError(
            f"{path}: a corpus file is a mapping of prepare settings (inputs, out, seq_len, ...), "
            f"not a {type(obj).__name__}"
        )
    return obj


def _where(path: str, e) -> str:
    mark = getattr(e, "problem_mark", None)
    return f"{path}:{mark.line + 1}" if mark is not None else path


def _type_problems(obj: dict) -> list[str]:
    """Values of the wrong type, judged by the type of PrepareConfig's defaults (all plain:
    str, int, float, bool, list of str; `local_dir` may be None)."""
    defaults = PrepareConfig()
    problems = []
    for key, value in obj.items():
        if key in ("name", "description"):
            continue
        default = getattr(defaults, key)
        if isinstance(default, list):
            ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            want = "a list of strings"
        elif isinstance(default, bool):
            ok, want = isinstance(value, bool), "true or false"
        elif isinstance(default, float):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            want = "a number"
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool)
            want = "an integer"
        else:  # str, or None for an optional path
            ok, want = isinstance(value, str) or value is default is None, "a string"
        if not ok:
            problems.append(f"{key}: {want}, got {value!r}")
    return problems


def config_from_args(args: argparse.Namespace) -> PrepareConfig:
    values = load_corpus(args.corpus) if args.corpus else {}
    if args.inputs:
        values["inputs"] = list(args.inputs)
    for name in (
        "out", "exclude", "seq_len", "val_fraction", "val_docs", "text_field", "format", "pack",
        "utf8_errors", "workers", "worker_index", "worker_count", "seed", "local_dir", "progress",
        "decompress",
    ):  # fmt: skip
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    cfg = PrepareConfig(**values)
    errs = cfg.validate()
    if args.merge:
        errs = [e for e in errs if e.startswith("prepare.out")]
    if errs:
        raise ConfigError("; ".join(errs))
    return cfg


def run_prepare(args: argparse.Namespace) -> int:
    """Run `prepare` (or `--merge`); print the summary; return the exit code."""
    from mbtrain.data import merge, prepare

    cfg = config_from_args(args)
    if getattr(args, "slurm", False):
        return _submit(args, cfg)
    result = merge(cfg.out) if args.merge else prepare(cfg)
    print(result.summary(), file=sys.stderr)
    return result.exit_code


def _submit(args: argparse.Namespace, cfg: PrepareConfig) -> int:
    """`--slurm`: submit the array and the merge job (mbtrain.cluster.prepare)."""
    from mbtrain.cluster.prepare import cluster_config_from_pairs, submit_prepare

    if args.merge or args.worker_index is not None:
        raise ConfigError("--slurm submits every worker and the merge; drop --merge/--worker-index")
    cluster = cluster_config_from_pairs(args.cluster, cpus_per_task=cfg.workers)
    result = submit_prepare(cfg, args.slurm_dir, cluster, dry_run=args.dry_run)
    if args.dry_run:
        print("\n# --- merge job ---\n".join(result))
        return 0
    array_id, merge_id = result
    print(f"submitted prepare array {array_id} ({cfg.worker_count} tasks) and merge {merge_id}")
    return 0
