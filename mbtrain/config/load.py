"""Layered, strict config loading for any schema: dataclass defaults <- recipe YAML (and its
bases) <- `key=value` overrides.

OmegaConf merges the layers and resolves interpolations (`${run.name}`, `${oc.env:VAR}`);
`typed.py` checks the result against the schema and reports every problem in one message;
then every section with a `validate()` reports its own value problems, all at once. A
resolved config written out (`save_yaml`) is itself a recipe, so a run can always be
reproduced from its directory.

The schema is the caller's: the run config (`mbtrain.train.run_config`) combines every
component's section; a corpus definition is a `PrepareConfig`; `--cluster KEY=VALUE` fills a
`ClusterConfig`. One loader, one error format, for all of them.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mbtrain.config.interpolation import env_fed_keys, free_text_keys
from mbtrain.config.sources import Layer, read_override_layer, read_recipe_layers
from mbtrain.config.typed import build_typed
from mbtrain.errors import ConfigError

T = TypeVar("T")


def problems(header: str, errors: list[str]) -> ConfigError:
    """One ConfigError listing every problem, one per line."""
    lines = "\n".join(f"  - {e}" for e in errors)
    noun = "problem" if len(errors) == 1 else "problems"
    return ConfigError(f"{header} ({len(errors)} {noun}):\n{lines}")


def _merge(schema: type, layers: list[Layer]) -> tuple[dict[str, Any], dict[str, str]]:
    origins: dict[str, str] = {}
    for layer in layers:
        origins.update(layer.origins)
    try:
        merged = OmegaConf.merge(*(OmegaConf.create(layer.values) for layer in layers))
        # Before anything is resolved for real: no secret is read until this passes.
        leaked = env_fed_keys(merged, free_text_keys(schema))
        if leaked:
            allowed = ", ".join(getattr(schema, "ENV_ALLOWED", ())) or "none"
            raise problems(
                "invalid config",
                [
                    f"{key}: takes its value from an environment variable "
                    f"(${{oc.env:...}}){f' ({origins[key]})' if key in origins else ''}; "
                    "free text is written into config.yaml, job names and wandb, so the "
                    f"environment may feed only paths ({allowed}) and numbers: write the "
                    "text itself"
                    for key in leaked
                ],
            )
        resolved = OmegaConf.to_container(merged, resolve=True)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or ""
        where = f" ({origins[key]})" if key in origins else ""
        raise ConfigError(
            f"{key or 'config'}: {e.msg if hasattr(e, 'msg') else e}{where}"
        ) from None
    return resolved, origins


def validate_sections(cfg: Any) -> list[str]:
    """The problems every section of `cfg` with a `validate()` reports (and `cfg`'s own)."""
    errors: list[str] = []
    for f in dataclasses.fields(cfg):
        section = getattr(cfg, f.name)
        if dataclasses.is_dataclass(section) and hasattr(section, "validate"):
            errors += section.validate()
    return errors


def build_from_layers(schema: type[T], layers: list[Layer], header: str = "invalid config") -> T:
    """Merge `layers` over the schema's defaults, type-check, validate: every problem at once."""
    values, origins = _merge(schema, [Layer(dataclasses.asdict(schema()), {}), *layers])
    cfg, errors = build_typed(schema, values, origins)
    if errors:
        raise problems(header, errors)
    errors = validate_sections(cfg)
    if not errors and hasattr(cfg, "validate") and not _has_sections(cfg):
        errors = cfg.validate()
    if errors:
        raise problems(header, errors)
    return cfg


def _has_sections(cfg: Any) -> bool:
    return any(dataclasses.is_dataclass(getattr(cfg, f.name)) for f in dataclasses.fields(cfg))


def load_typed(
    schema: type[T],
    recipe: str | os.PathLike | None = None,
    overrides: list[str] | None = None,
    header: str = "invalid config",
) -> T:
    """`schema` from its defaults <- `recipe` (with its bases) <- `overrides`."""
    layers: list[Layer] = []
    if recipe is not None:
        layers += read_recipe_layers(recipe)
    if overrides:
        layers.append(read_override_layer(list(overrides)))
    return build_from_layers(schema, layers, header)


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(to_dict(cfg)), sort_keys=False)


def save_yaml(cfg: Any, path: str | os.PathLike) -> Path:
    """Write the resolved config atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(to_yaml(cfg), encoding="utf-8")
    os.replace(tmp, path)
    return path
