"""mbtrain: distributed long-context training of MegaByte byte-level models.

The Python API, for notebooks and scripts (`mbtrain.api`; each name is imported on first use,
so `import mbtrain` imports neither torch nor DeepSpeed):

    import mbtrain
    model = mbtrain.load_model("runs/demo")          # run dir, checkpoint or export, or a Hub id
    print(mbtrain.score_bytes(model, open("notes.txt", "rb").read()).bpb)

- `load_model`, `score_bytes`, `generate`, `prepare`, `train`, and `Score`;
- `MegaByte`, `ByteTransformer`: the models with `from_pretrained` / `save_pretrained` /
  `push_to_hub` (`mbtrain.checkpoint.hub`); `ModelConfig`, their config.
"""

from __future__ import annotations

import importlib
import types
from typing import TYPE_CHECKING, Any

import mbtrain.train as _train_package
from mbtrain.cli.version import version

if TYPE_CHECKING:
    from mbtrain.api import Score, generate, load_model, prepare, score_bytes, train
    from mbtrain.checkpoint.hub import ByteTransformer, MegaByte
    from mbtrain.model.config import ModelConfig

__version__ = version()

_LAZY = {
    "load_model": "mbtrain.api",
    "score_bytes": "mbtrain.api",
    "generate": "mbtrain.api",
    "prepare": "mbtrain.api",
    "Score": "mbtrain.api",
    "MegaByte": "mbtrain.checkpoint.hub",
    "ByteTransformer": "mbtrain.checkpoint.hub",
    "ModelConfig": "mbtrain.model.config",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mbtrain' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, "train"})


class _TrainPackage(types.ModuleType):
    """`mbtrain.train` is two things: the training package (`mbtrain.train.loop`, ...) and the
    API function `mbtrain.api.train`. Python binds a subpackage to its parent's attribute
    when it is first imported, which would hide a function of that name as soon as anything
    imported the package (the API function itself does); so the package is made callable."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """`mbtrain.api.train(recipe, *overrides, **settings)`: see its docstring."""
        from mbtrain.api import train as train_function

        return train_function(*args, **kwargs)


_train_package.__class__ = _TrainPackage

__all__ = [
    "ByteTransformer",
    "MegaByte",
    "ModelConfig",
    "Score",
    "generate",
    "load_model",
    "prepare",
    "score_bytes",
    "train",
]
