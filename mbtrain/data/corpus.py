"""Corpus definitions (`data_prep/corpora/*.yaml`): a name, a description and the `prepare`
settings of one corpus, written flat in one file:

    name: pystdlib
    description: Python standard library sources (*.py), raw bytes
    inputs: ["{stdlib}/**/*.py"]
    out: data/pystdlib
    seq_len: 8192

The file is read by the general config machinery (`mbtrain.config`), like a recipe: strict,
every unknown or mistyped key reported at once with its `file:line` and the nearest valid key,
YAML tags that build Python objects refused (a corpus file is data). In `inputs`, `{stdlib}`
expands to this Python's standard library and `{corpora}` to $MBTRAIN_CORPORA (default
data/corpora, where data_prep/corpora/fetch_corpora.py writes); `{{` and `}}` are literal braces.
"""

from __future__ import annotations

import os
import sysconfig
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mbtrain.config.load import build_from_layers
from mbtrain.config.sources import Layer, read_yaml_layer
from mbtrain.data.config import PrepareConfig
from mbtrain.errors import ConfigError


@dataclass
class CorpusConfig(PrepareConfig):
    """One corpus: what it is, and how `mbtrain prepare` turns it into a dataset. Flat, as the
    file is: PrepareConfig's settings, and two keys of its own."""

    # Paths may come from the environment (`out: ${oc.env:SCRATCH}/pystdlib`), as in recipes.
    ENV_ALLOWED = ("inputs", "exclude", "out", "local_dir")

    name: str = ""
    """Short name of the corpus (`pystdlib`)."""
    description: str = ""
    """One line on what the corpus holds and where it comes from."""

    def prepare_config(self) -> PrepareConfig:
        """The prepare settings alone (what `prepare` and the Slurm jobs are given)."""
        return PrepareConfig(**{f.name: getattr(self, f.name) for f in fields(PrepareConfig)})


_OWN_KEYS = ("name", "description")  # the file's keys that are not prepare settings


def placeholders() -> dict[str, str]:
    """What `{name}` in a corpus file's inputs expands to."""
    return {
        "stdlib": sysconfig.get_paths()["stdlib"],
        # Where data_prep/corpora/fetch_corpora.py puts the benchmark corpora.
        "corpora": os.environ.get("MBTRAIN_CORPORA", os.path.join("data", "corpora")),
    }


def read_corpus_layer(path: str | os.PathLike) -> Layer:
    """A corpus file as a config layer of `CorpusConfig` (each key keeping its `file:line`),
    with the placeholders of `inputs` expanded. ConfigError, naming the file and line, if it
    is not a YAML mapping of plain values."""
    layer = read_yaml_layer(path, "corpus definition")
    inputs = layer.values.get("inputs")
    if isinstance(inputs, list):  # anything else: the typed check reports it, with its line
        where = layer.origins.get("inputs", str(path))
        layer.values["inputs"] = [_expand(s, where) if isinstance(s, str) else s for s in inputs]
    return layer


def _expand(spec: str, where: str) -> str:
    try:
        return os.path.expanduser(spec.format(**placeholders()))
    except KeyError as e:
        problem = f"{{{e.args[0]}}} is not a placeholder"
    except (IndexError, ValueError) as e:
        problem = f"not a valid pattern ({e})"
    known = ", ".join(f"{{{k}}}" for k in placeholders())
    raise ConfigError(
        f"{where}: inputs: {spec!r}: {problem} (known: {known}; {{{{ and }}}} are literal braces)"
    )


def load_corpus(path: str | os.PathLike) -> dict[str, Any]:
    """The prepare settings a corpus file gives (and `inputs`, expanded), as keyword
    arguments of `PrepareConfig`: callers add or replace some (`out`, `seq_len`) and build
    their own. The file is checked as a whole first: on its own it must be a valid corpus
    (inputs and out included); ConfigError lists every problem, each with its `file:line`."""
    layer = read_corpus_layer(path)
    corpus = build_from_layers(CorpusConfig, [layer], f"invalid corpus file {Path(path)}")
    given = [key for key in layer.values if key not in _OWN_KEYS]
    return {key: getattr(corpus, key) for key in dict.fromkeys(["inputs", *given])}
