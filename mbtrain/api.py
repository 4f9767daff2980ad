"""The Python API: the library behind each CLI command, for notebooks and scripts.

    import mbtrain
    model = mbtrain.load_model("runs/demo")          # run dir, checkpoint or export, or a Hub id
    print(mbtrain.score_bytes(model, open("notes.txt", "rb").read()).bpb)

`load_model` (eval, generate and export read models the same way), `score_bytes`
(`mbtrain eval`'s scoring, without the compressors), `generate`, `prepare` and `train` take
what the commands take, checked the same way: every config problem at once as a ConfigError,
bad data as a DataError, a missing or damaged model as a CheckpointError (all `MbtrainError`).
`mbtrain/__init__.py` exposes them lazily, so `import mbtrain` imports neither torch nor
DeepSpeed; this module, at the top of the layers, may import anything.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from mbtrain.checkpoint import consolidate
from mbtrain.config.load import build_from_layers
from mbtrain.config.sources import Layer, read_override_layer, read_recipe_layers
from mbtrain.data import prepare as prepare_dataset
from mbtrain.data.corpus import CorpusConfig, read_corpus_layer
from mbtrain.data.parts import PrepareResult
from mbtrain.errors import DataError
from mbtrain.inference.evaluate import DEFAULT_MODES, check_eval_args, iter_eval_documents
from mbtrain.model import decode, scoring
from mbtrain.train.run_config import RunConfig

if TYPE_CHECKING:
    from mbtrain.train.loop import TrainResult

PathLike = str | os.PathLike


def load_model(source: PathLike, *, step: int | None = None, device: str = "cpu") -> nn.Module:
    """A trained model, ready to use (eval mode) on `device`, without DeepSpeed.

    `source` is a run directory (its current export, else its newest loadable checkpoint),
    a checkpoint directory, an export directory, or a Hugging Face Hub id (`owner/name`,
    downloaded once into the Hub cache). `step` picks a run's checkpoint. The model is an
    `mbtrain.MegaByte` or `mbtrain.ByteTransformer`: `model(x)` gives next-byte logits, and
    `save_pretrained` / `push_to_hub` write it out as an export.

    Example:
        >>> model = mbtrain.load_model("runs/demo")
        >>> model = mbtrain.load_model("runs/demo", step=200, device="cuda")
    """
    return consolidate.load_model(source, step, device)


@dataclass(frozen=True)
class Score:
    """What `score_bytes` measured."""

    bpb: float
    """Bits per byte: the mean negative log2-likelihood of each byte."""
    bytes: int
    """Bytes scored."""
    documents: int
    """Documents scored, each on its own (1 for a bytes argument)."""
    mode: str
    """Windows: basic, sliding or strided (`mbtrain.model.scoring`)."""
    context: int
    """Bytes per window."""


def score_bytes(
    model: nn.Module | PathLike,
    data: bytes | bytearray | memoryview | PathLike,
    *,
    mode: str | None = None,
    context: int | None = None,
    stride: int | None = None,
    batch_size: int = 8,
    max_bytes: int | None = None,
) -> Score:
    """Bits per byte of `data` under `model`, as `mbtrain eval` computes them.

    `data`: bytes, or a path (str or Path) to a file, a directory (every file, each its own
    document) or a prepared split (`data/x/val`), as `mbtrain eval` reads them; text is
    scored as its bytes, `text.encode()`. `model`: a model or anything `load_model` takes.
    `mode` None: `mbtrain eval`'s default (sliding windows); `context` None: the model's
    seq_len. Out-of-range arguments raise ValueError naming the argument.

    Example:
        >>> model = mbtrain.load_model("runs/demo")
        >>> mbtrain.score_bytes(model, open("notes.txt", "rb").read()).bpb
        2.0713
        >>> mbtrain.score_bytes(model, "data/demo/val", mode="strided", max_bytes=100_000)
    """
    model = model if isinstance(model, nn.Module) else load_model(model)
    check_eval_args(model, (mode,) if mode else None, context, stride, batch_size, max_bytes)
    docs = _documents(data, max_bytes)
    context = model.cfg.seq_len if context is None else context
    mode = mode or DEFAULT_MODES[0]
    # As evaluate_model sums them: the same figure as `mbtrain eval` on the same documents.
    scores = scoring.score_documents(model, docs, context, mode, stride, batch_size)
    nats, count = sum(r.nats for r in scores), sum(r.count for r in scores)
    return Score(nats / count / math.log(2), count, len(docs), mode, context)


def _documents(
    data: bytes | bytearray | memoryview | PathLike, max_bytes: int | None
) -> list[bytes]:
    """The documents to score, at most `max_bytes` in all; DataError if there are none."""
    if isinstance(data, (bytes, bytearray, memoryview)):
        docs, where = [bytes(data)], "data"
    elif isinstance(data, (str, os.PathLike)):
        where = os.fspath(data)
        if not Path(where).exists() and not where.startswith("s3://"):
            raise DataError(
                f"{where}: no such file, directory or dataset split "
                "(score_bytes reads a str as a path; to score text, pass text.encode())"
            )
        docs = [d for _, d in iter_eval_documents([where])]
    else:
        raise TypeError(f"data: bytes or a path, got {type(data).__name__}")
    out, total = [], 0
    for doc in docs:
        if max_bytes is not None:
            doc = doc[: max_bytes - total]
        if doc:
            out.append(doc)
            total += len(doc)
        if max_bytes is not None and total >= max_bytes:
            break
    if not out:
        raise DataError(f"{where}: no bytes to score")
    return out


def generate(
    model: nn.Module | PathLike,
    prompt: bytes | str = b"",
    max_bytes: int = 256,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: bytes | str | Sequence[bytes | str] | None = None,
) -> bytes:
    """The bytes `model` generates after `prompt` (text is UTF-8 encoded), at most
    `max_bytes`; `temperature` 0 is greedy. Stops early at a `stop` sequence (left out of the
    result) or when learned positions run out. Out-of-range arguments raise ValueError.
    For bytes one by one as they come, use `mbtrain.model.generate`.

    Example:
        >>> model = mbtrain.load_model("runs/demo")
        >>> print(mbtrain.generate(model, "def ", max_bytes=200, top_p=0.9, seed=1).decode())
    """
    model = model if isinstance(model, nn.Module) else load_model(model)
    stops = [stop] if isinstance(stop, (bytes, str)) else list(stop or [])
    return bytes(
        decode.generate(
            model,
            _utf8(prompt),
            max_bytes=max_bytes,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
            stop=[_utf8(s) for s in stops] or None,
        )
    )


def _utf8(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def prepare(
    inputs: PathLike | Sequence[PathLike] | None = None,
    out: PathLike | None = None,
    *,
    corpus: PathLike | None = None,
    **settings: Any,
) -> PrepareResult:
    """Prepare corpora into an MDS dataset (`out/train`, `out/val`), as `mbtrain prepare`.

    `inputs`: files, directories, globs (`**`), JSON Lines (.gz/.zst), Parquet, Arrow.
    `corpus`: a corpus file (data_prep/corpora/*.yaml) giving defaults. `settings`: any
    `mbtrain.data.PrepareConfig` field (seq_len, val_fraction, text_field, workers, ...),
    over the corpus file's values; unknown or mistyped keys are one ConfigError listing them
    all. Returns the result (`.stats`, `.summary()`, `.exit_code`).

    Example:
        >>> mbtrain.prepare("notes/", "data/notes", seq_len=1024, val_fraction=0.1)
        >>> mbtrain.prepare(corpus="data_prep/corpora/pystdlib.yaml", out="data/pystdlib")
    """
    layers = [read_corpus_layer(corpus)] if corpus is not None else []
    given: dict[str, Any] = {}
    if inputs is not None:
        single = isinstance(inputs, (str, os.PathLike))
        given["inputs"] = [os.fspath(p) for p in ([inputs] if single else inputs)]
    if out is not None:
        given["out"] = os.fspath(out)
    given.update(settings)
    layers.append(Layer(given, {k: f"argument {k}" for k in given}))
    cfg = build_from_layers(CorpusConfig, layers, "invalid prepare config").prepare_config()
    return prepare_dataset(cfg)


def train(recipe: PathLike | RunConfig, *overrides: str, **settings: Any) -> TrainResult:
    """Train (or resume) a run in this process, as `mbtrain train RECIPE key=value ...`.

    `recipe`: a recipe YAML (or a run's config.yaml, to resume it as it was) or a RunConfig
    (`mbtrain.train.run_config.load_config`). `overrides`: "key=value" strings as on the
    command line; `settings`: sections as dicts (`train={"steps": 50}`) or dotted keys
    (`**{"train.steps": 50}`), applied last. Every problem is one ConfigError before anything
    starts. A run directory that holds checkpoints resumes from the latest. Progress lines go
    to stderr through the `mbtrain` logger (set up here unless you configured logging).
    Returns the final step, loss, validation bits per byte, run directory and checkpoint.

    Example:
        >>> result = mbtrain.train("recipes/tiny_cpu.yaml", "data.train=data/notes/train",
        ...                        "data.val=data/notes/val", train={"steps": 50})
        >>> model = mbtrain.load_model(result.run_dir)
    """
    # Here, not at the top: the loop imports DeepSpeed (seconds), which loading, scoring and
    # generating never need.
    from mbtrain.cli.logs import setup_logging
    from mbtrain.train.loop import train as train_run

    if isinstance(recipe, RunConfig):
        layers = [Layer(dataclasses.asdict(recipe), {})]
    else:
        layers = read_recipe_layers(recipe)
    if overrides:
        layers.append(read_override_layer(list(overrides)))
    if settings:
        layers.append(_settings_layer(settings))
    cfg = build_from_layers(RunConfig, layers, "invalid config")
    if not logging.getLogger("mbtrain").handlers and not logging.getLogger().handlers:
        setup_logging()
    return train_run(cfg)


def _settings_layer(settings: dict[str, Any]) -> Layer:
    """Keyword settings as a config layer: `train={"steps": 5}` and `**{"train.steps": 5}`."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for key, value in settings.items():
        *parents, leaf = key.split(".")
        node = values
        for part in parents:
            node = node.setdefault(part, {})
        if isinstance(value, dict) and isinstance(node.get(leaf), dict):
            node[leaf].update(value)
        else:
            node[leaf] = value
        origins[key] = f"argument {key}"
        if isinstance(value, dict):
            origins.update({f"{key}.{k}": f"argument {key}" for k in value})
    return Layer(values, origins)


__all__ = ["Score", "generate", "load_model", "prepare", "score_bytes", "train"]
