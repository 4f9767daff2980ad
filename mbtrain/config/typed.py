"""Turning merged, untyped config values into typed dataclasses, collecting every error.

OmegaConf merges the layers and resolves `${...}` interpolations; this module then checks the
result against the dataclass schema itself, so that *all* unknown keys and type errors are
reported at once (OmegaConf's structured configs stop at the first), each with the file and
line or the override it came from and the nearest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Union

_NONE = type(None)


def schema_keys(cls: type, prefix: str = "") -> list[str]:
    """Every valid dotted key of a dataclass schema (sections and leaves)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        dotted = f"{prefix}.{f.name}" if prefix else f.name
        keys.append(dotted)
        if dataclasses.is_dataclass(hints[f.name]):
            keys.extend(schema_keys(hints[f.name], dotted))
    return keys


def nearest_key(key: str, valid: list[str]) -> str | None:
    """The valid key a mistyped one most likely meant."""
    parent = key.rpartition(".")[0]
    siblings = [k for k in valid if k.rpartition(".")[0] == parent]
    for pool, cutoff in ((siblings, 0.6), (valid, 0.75)):
        match = difflib.get_close_matches(key, pool, n=1, cutoff=cutoff)
        if match:
            return match[0]
    # A right leaf name in the wrong section (`steps` instead of `train.steps`).
    leaf = key.rpartition(".")[2]
    same_leaf = [k for k in valid if k.rpartition(".")[2] == leaf]
    return same_leaf[0] if same_leaf else None


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in typing.get_args(tp))
        return f"{origin.__name__}[{args}]"
    return "null" if tp is _NONE else getattr(tp, "__name__", str(tp))


class _Converter:
    def __init__(self, origins: dict[str, str], valid_keys: list[str]):
        self.origins = origins
        self.valid_keys = valid_keys
        self.errors: list[str] = []

    def where(self, key: str) -> str:
        # The nearest recorded origin: the key itself or the section it sits in.
        probe = key
        while probe:
            if probe in self.origins:
                return f" ({self.origins[probe]})"
            probe = probe.rpartition(".")[0]
        return ""

    def dataclass_from(self, cls: type, values: Any, prefix: str) -> Any:
        if not isinstance(values, dict):
            self.errors.append(
                f"{prefix}: expected a section of keys, got {values!r}{self.where(prefix)}"
            )
            return cls()
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in names:
                dotted = f"{prefix}.{key}" if prefix else str(key)
                hint = nearest_key(dotted, self.valid_keys)
                suggestion = f"; did you mean {hint!r}?" if hint else ""
                self.errors.append(f"{dotted}: unknown key{suggestion}{self.where(dotted)}")
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in values:
                dotted = f"{prefix}.{f.name}" if prefix else f.name
                kwargs[f.name] = self.value(hints[f.name], values[f.name], dotted)
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as e:  # a dataclass __post_init__ refusing a value
            self.errors.append(f"{prefix or 'config'}: {e}{self.where(prefix)}")
            return cls()

    def value(self, tp: Any, value: Any, key: str) -> Any:
        if dataclasses.is_dataclass(tp):
            return self.dataclass_from(tp, value, key)
        origin = typing.get_origin(tp)
        if tp is Any:
            return value
        if origin in (Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and _NONE in args:
                return None
            for arg in args:
                if arg is _NONE:
                    continue
                sub = _Converter(self.origins, self.valid_keys)
                out = sub.value(arg, value, key)
                if not sub.errors:
                    return out
            return self._type_error(tp, value, key)
        if origin is list:
            if not isinstance(value, list):
                return self._type_error(tp, value, key)
            (item_type,) = typing.get_args(tp) or (Any,)
            return [self.value(item_type, v, f"{key}[{i}]") for i, v in enumerate(value)]
        if origin is dict or tp is dict:
            if not isinstance(value, dict):
                return self._type_error(tp, value, key)
            return dict(value)
        if tp is bool:
            if isinstance(value, bool):
                return value
            return self._type_error(tp, value, key)
        if tp is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, float) and value.is_integer():
                return int(value)
            return self._type_error(tp, value, key)
        if tp is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value):
                    # No setting means "infinitely many" or "not a number": inf and nan only
                    # ever arrive by accident (a typo, an overflowed sweep) and train wrong.
                    self.errors.append(
                        f"{key}: must be a finite number, got {value!r}{self.where(key)}"
                    )
                    return None
                return float(value)
            return self._type_error(tp, value, key)
        if tp is str:
            if isinstance(value, str):
                return value
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return str(value)
            return self._type_error(tp, value, key)
        return value

    def _type_error(self, tp: Any, value: Any, key: str) -> None:
        self.errors.append(f"{key}: expected {_type_name(tp)}, got {value!r}{self.where(key)}")
        return None


def build_typed(cls: type, values: dict, origins: dict[str, str]) -> tuple[Any, list[str]]:
    """Instantiate `cls` from nested `values`; return it and every problem found."""
    conv = _Converter(origins, schema_keys(cls))
    obj = conv.dataclass_from(cls, values, "")
    return obj, conv.errors
