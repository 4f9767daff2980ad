"""Where environment interpolation may go: paths and numbers, never free text.

`run.name=exp-${oc.env:WANDB_API_KEY}` would put the key into config.yaml, the Slurm job
name (which every user sees in squeue), the batch script and the wandb run name. Free text is
written everywhere, so a value that reaches a free-text field from `${oc.env:...}` by any
route is refused with the field and where it was set. Numbers, and the keys a schema lists
in its `ENV_ALLOWED` (the run config: paths such as `run.dir`, `data.*`), may use the
environment: `data.train: ${oc.env:SCRATCH}/corpus/train` is the usual cluster idiom.

Two checks, and a field is refused if either finds the environment:
- a probe: each free-text field is resolved with `oc.env` swapped for a resolver that returns
  a random marker and never reads the environment. OmegaConf itself then follows every route
  (`${oc.select:...}`, relative `${..x}`, nested and default arguments, `${oc.decode:...}`,
  text around an interpolation), so the marker in the result means the environment feeds it.
- a reading of the unresolved text, following plain `${a.b}` references: it still answers
  where the probe cannot resolve a field (a broken reference, reported later by the real
  resolution) and it refuses `${oc.env:...}` written into free text even where the probe's
  marker does not come through (the environment choosing a key: `${oc.select:${oc.env:K}}`).

Nothing is resolved for real (no secret is read) before both pass.
"""

from __future__ import annotations

import re
import types
import typing
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from typing import Any

from omegaconf import Container, OmegaConf
from omegaconf.resolvers import oc

_ENV = re.compile(r"\$\{\s*oc\.env\s*:")
_REF = re.compile(r"\$\{\s*([A-Za-z_][\w.]*)\s*\}")


def env_allowed(key: str, allowed: tuple[str, ...]) -> bool:
    """Whether `key` is one of `allowed` (keys, or prefixes ending in '.')."""
    return any(key.startswith(a) if a.endswith(".") else key == a for a in allowed)


def free_text_keys(
    cls: type, prefix: str = "", allowed: tuple[str, ...] | None = None
) -> list[str]:
    """Dotted keys of str and list[str] fields (free text) of schema `cls`, except those its
    `ENV_ALLOWED` (keys, or prefixes ending in '.') lets the environment feed."""
    if allowed is None:
        allowed = tuple(getattr(cls, "ENV_ALLOWED", ()))
    out = []
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints[f.name]
        if is_dataclass(tp):
            out += free_text_keys(tp, key, allowed)
            continue
        if typing.get_origin(tp) in (typing.Union, types.UnionType):  # `str | None` is text
            tp = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
        text = tp is str or (typing.get_origin(tp) is list and typing.get_args(tp) == (str,))
        if text and not env_allowed(key, allowed):
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


def _static_env_keys(raw: dict[str, Any], keys: list[str]) -> list[str]:
    """Those of `keys` whose unresolved value draws on `${oc.env:...}`, directly or through
    plain references to other keys (followed transitively; a reference to a section counts
    every key under it)."""
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


@contextmanager
def _env_probe(marker: str) -> Iterator[None]:
    """`oc.env` answers `marker` (any name, any default) and reads no environment variable.

    Resolvers are global to OmegaConf, so this swaps the one registered resolver for the
    length of the block; config loading runs once, in the main thread, before anything
    else resolves. The default `oc.env` is put back as OmegaConf registers it."""
    OmegaConf.register_resolver(
        "oc.env", lambda *_args: marker, replace=True, annotation_validation="off"
    )
    try:
        yield
    finally:
        OmegaConf.register_resolver("oc.env", oc.env, replace=True, annotation_validation="off")


def _mentions(value: Any, marker: str) -> bool:
    if isinstance(value, str):
        return marker in value
    if isinstance(value, dict):
        return any(_mentions(k, marker) or _mentions(v, marker) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_mentions(v, marker) for v in value)
    return False


def _probed_env_keys(merged: Container, keys: list[str]) -> list[str]:
    """Those of `keys` whose value, resolved with `oc.env` probed, carries the probe's marker.
    A field that does not resolve is left to the static check, unless the failure names the
    marker (the environment was read as a key: `${${oc.env:K}}`)."""
    marker = f"mbtrain-env-probe-{uuid.uuid4().hex}"
    out = []
    with _env_probe(marker):
        for key in keys:
            try:
                value = OmegaConf.select(merged, key)
                if OmegaConf.is_config(value):
                    value = OmegaConf.to_container(value, resolve=True)
            except Exception as e:  # any resolver may fail here; the real resolution reports it
                if marker in str(e):
                    out.append(key)
                continue
            if _mentions(value, marker):
                out.append(key)
    return out


def env_fed_keys(merged: Container, keys: list[str]) -> list[str]:
    """Those of `keys` (dotted) whose value draws on `${oc.env:...}` by any route, in the order
    given. Reads no environment variable: `merged` is the unresolved, merged config."""
    raw = OmegaConf.to_container(merged, resolve=False)
    found = set(_static_env_keys(raw, keys)) | set(_probed_env_keys(merged, keys))
    return [k for k in keys if k in found]
