"""Layered, strict config loading: dataclass defaults <- recipe YAML (and its bases) <- overrides.

OmegaConf merges the layers and resolves interpolations (`${run.name}`, `${oc.env:VAR}`);
`mbtrain.config.typed` checks the result against the schema and reports every problem in one
message. The resolved config is what gets written to `<run.dir>/config.yaml`, and that file is
itself a recipe, so a run can always be reproduced from its directory.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mbtrain.config.interpolation import env_fed_keys, free_text_keys
from mbtrain.config.schema import RunConfig
from mbtrain.config.sources import Layer, read_override_layer, read_recipe_layers
from mbtrain.config.typed import build_typed
from mbtrain.errors import ConfigError


def _problems(header: str, errors: list[str]) -> ConfigError:
    lines = "\n".join(f"  - {e}" for e in errors)
    noun = "problem" if len(errors) == 1 else "problems"
    return ConfigError(f"{header} ({len(errors)} {noun}):\n{lines}")


def _merge(layers: list[Layer]) -> tuple[dict[str, Any], dict[str, str]]:
    origins: dict[str, str] = {}
    for layer in layers:
        origins.update(layer.origins)
    try:
        merged = OmegaConf.merge(*(OmegaConf.create(layer.values) for layer in layers))
        # Before anything is resolved for real: no secret is read until this passes.
        leaked = env_fed_keys(merged, free_text_keys(RunConfig))
        if leaked:
            raise _problems(
                "invalid config",
                [
                    f"{key}: takes its value from an environment variable "
                    f"(${{oc.env:...}}){f' ({origins[key]})' if key in origins else ''}; "
                    "free text is written into config.yaml, job names and wandb, so the "
                    "environment may feed only paths (run.dir, data.*, checkpoint.resume, "
                    "cluster.python) and numbers: write the text itself"
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


def load_config(
    recipe: str | os.PathLike | None = None, overrides: list[str] | None = None
) -> RunConfig:
    """Build the typed run config; raise ConfigError listing every problem at once."""
    defaults = Layer(dataclasses.asdict(RunConfig()), {})
    layers = [defaults]
    if recipe is not None:
        layers += read_recipe_layers(recipe)
    if overrides:
        layers.append(read_override_layer(list(overrides)))
    values, origins = _merge(layers)
    cfg, errors = build_typed(RunConfig, values, origins)
    if errors:
        raise _problems("invalid config", errors)
    errors = []
    for section in RunConfig.SECTIONS:
        errors += getattr(cfg, section).validate()
    if errors:
        raise _problems("invalid config", errors)
    return cfg


def config_to_dict(cfg: RunConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def config_to_yaml(cfg: RunConfig) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(config_to_dict(cfg)), sort_keys=False)


def save_config(cfg: RunConfig, path: str | os.PathLike) -> Path:
    """Write the resolved config atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(config_to_yaml(cfg), encoding="utf-8")
    os.replace(tmp, path)
    return path
