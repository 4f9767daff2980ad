"""Where environment interpolation may go: paths and numbers, never free text.

`run.name=exp-${oc.env:WANDB_API_KEY}` would put the key into config.yaml, the Slurm job
name, the batch script and the wandb run name. Free text is written everywhere, so a value
that reaches a free-text field from `${oc.env:...}`, directly or through other keys
(`run.name: ${tag}`, `tag: ${oc.env:X}`), is refused with the field and where it was set.
Paths (`run.dir`, `data.*`, `checkpoint.resume`, `cluster.python`) and numbers may use the
environment: `data.train: ${oc.env:SCRATCH}/corpus/train` is the usual cluster idiom.

The check reads the unresolved values and follows references, so nothing is resolved (no
secret is read) before it passes.
"""

from __future__ import annotations

import re
import typing
from dataclasses import fields, is_dataclass
from typing import Any

ENV_ALLOWED = ("run.dir", "data.", "checkpoint.resume", "cluster.python")
"""Keys (or prefixes, ending in '.') whose values may come from the environment."""

_ENV = re.compile(r"\$\{\s*oc\.env\s*:")
_REF = re.compile(r"\$\{\s*([A-Za-z_][\w.]*)\s*\}")


def env_allowed(key: str) -> bool:
    return any(key.startswith(a) if a.endswith(".") else key == a for a in ENV_ALLOWED)


def free_text_keys(cls: type, prefix: str = "") -> list[str]:
    """Dotted keys of str and list[str] fields (free text) outside ENV_ALLOWED."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if is_dataclass(tp):
            out += free_text_keys(tp, key)
            continue
        text = tp is str or (typing.get_origin(tp) is list and typing.get_args(tp) == (str,))
        if text and not env_allowed(key):
            out.append(key)
    return out


def _flatten(values: Any, prefix: str, out: dict[str, Any]) -> None:
    if isinstance(values, dict):
        out[prefix] = values
        for k, v in values.items():
            _flatten(v, f"{prefix}.{k}" if prefix else str(k), out)
    elif isinstance(values, list):
        out[prefix] = values
        for i, v in enumerate(values):
            _flatten(v, f"{prefix}[{i}]", out)
    else:
        out[prefix] = values


def env_fed_keys(raw: dict[str, Any], keys: list[str]) -> list[str]:
    """Those of `keys` whose unresolved value draws on `${oc.env:...}`, directly or through
    references to other keys (followed transitively; a reference to a section counts every
    key under it)."""
    flat: dict[str, Any] = {}
    _flatten(raw, "", flat)
    memo: dict[str, bool] = {}

    def tainted(key: str, seen: frozenset[str]) -> bool:
        if key in memo:
            return memo[key]
        if key in seen:
            return False  # a reference cycle: OmegaConf reports it when resolving
        value = flat.get(key)
        result = False
        if isinstance(value, str):
            if _ENV.search(value):
                result = True
            else:
                result = any(tainted(ref, seen | {key}) for ref in _REF.findall(value))
        elif isinstance(value, (dict, list)):
            children = [k for k in flat if k.startswith(key + ".") or k.startswith(key + "[")]
            result = any(
                tainted(c, seen | {key}) for c in children if not isinstance(flat[c], (dict, list))
            )
        memo[key] = result
        return result

    out = []
    for key in keys:
        if key in flat and tainted(key, frozenset()):
            out.append(key)
    return out
