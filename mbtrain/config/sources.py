"""Reading config layers while remembering where every key came from.

Strict errors must name the file and line of a bad key, so recipes are parsed with PyYAML's
node API (which keeps line numbers) instead of a plain `safe_load`. A recipe may build on
other recipes with a top-level `base:` (a path, or a list of paths, relative to the recipe).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mbtrain.errors import ConfigError

BASE_KEY = "base"


@dataclass
class Layer:
    """One layer of configuration: a nested dict plus the origin of each dotted key."""

    values: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)


def _node_to_python(
    node: yaml.Node, prefix: str, origin: str, origins: dict[str, str], what: str = "recipe"
) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(yaml.safe_load(yaml.serialize(key_node)))
            dotted = f"{prefix}.{key}" if prefix else key
            if key in out:
                raise ConfigError(
                    f"{origin}:{key_node.start_mark.line + 1}: key {dotted!r} appears twice"
                )
            origins[dotted] = f"{origin}:{key_node.start_mark.line + 1}"
            out[key] = _node_to_python(value_node, dotted, origin, origins, what)
        return out
    # Scalars and sequences: let PyYAML's own (safe) constructor give them their types.
    try:
        return yaml.safe_load(yaml.serialize(node))
    except yaml.constructor.ConstructorError:
        # e.g. `!!python/object/apply:os.system`: recipes are data, and safe loading refuses
        # tags that would build objects.
        where = f"{origin}:{node.start_mark.line + 1}"
        raise ConfigError(
            f"{where}: {prefix or 'value'}: tag {node.tag!r} is not allowed; a {what} holds "
            "plain YAML values only (strings, numbers, booleans, lists, mappings)"
        ) from None


def read_yaml_layer(path: str | Path, what: str = "recipe") -> Layer:
    """Parse one YAML file into a Layer, keeping `file:line` for every key; `what` names the
    kind of file in errors (a recipe, a corpus definition)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: {what} not found")
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(e, 'problem', e)})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text") from None
    if node is None:
        return Layer({}, {})
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(f"{path}:{node.start_mark.line + 1}: a {what} must be a mapping of keys")
    origins: dict[str, str] = {}
    values = _node_to_python(node, "", str(path), origins, what)
    return Layer(values, origins)


def read_recipe_layers(path: str | Path, _seen: tuple[Path, ...] = ()) -> list[Layer]:
    """A recipe and the bases it builds on, lowest layer first."""
    path = Path(path).resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"{path}: recipe bases form a cycle ({chain})")
    layer = read_yaml_layer(path)
    bases = layer.values.pop(BASE_KEY, None)
    layer.origins.pop(BASE_KEY, None)
    layers: list[Layer] = []
    if bases is not None:
        for base in [bases] if isinstance(bases, str) else list(bases):
            if not isinstance(base, str):
                raise ConfigError(f"{path}: '{BASE_KEY}' must be a path or a list of paths")
            layers.extend(read_recipe_layers(path.parent / base, (*_seen, path)))
    layers.append(layer)
    return layers


_SEXAGESIMAL = re.compile(r"^\s*\d+(:[0-5]?\d)+\s*$")


def _parse_value(text: str) -> Any:
    # YAML 1.1 reads "12:00:00" as the base-60 number 43200; on a command line it is a time.
    if _SEXAGESIMAL.match(text):
        return text.strip()
    # YAML 1.1 reads "1e-3" as a string; users mean a number.
    value = yaml.safe_load(text) if text.strip() else ""
    if isinstance(value, str):
        for cast in (int, float):
            try:
                return cast(text)
            except ValueError:
                pass
    return value


def read_override_layer(overrides: list[str]) -> Layer:
    """`key.sub=value` strings from the command line into one Layer."""
    values: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r}: expected key=value, e.g. train.steps=100")
        try:
            value = _parse_value(text)
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: value is not valid YAML") from None
        node = values
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            prefix = ".".join(parts[: i + 1])
            if not isinstance(node.get(part, {}), dict):
                raise ConfigError(f"override {item!r}: {prefix} is a value, not a section")
            node = node.setdefault(part, {})
            origins.setdefault(prefix, f"override {item!r}")
        node[parts[-1]] = value
        origins[key] = f"override {item!r}"
        if isinstance(value, dict):
            _record_nested(value, key, f"override {item!r}", origins)
    return Layer(values, origins)


def _record_nested(value: dict, prefix: str, origin: str, origins: dict[str, str]) -> None:
    for k, v in value.items():
        origins[f"{prefix}.{k}"] = origin
        if isinstance(v, dict):
            _record_nested(v, f"{prefix}.{k}", origin, origins)
