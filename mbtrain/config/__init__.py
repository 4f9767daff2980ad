"""Typed, layered, strict configuration (see `load.py`)."""

from mbtrain.config.load import config_to_dict, config_to_yaml, load_config, save_config
from mbtrain.config.schema import RunConfig
from mbtrain.config.validate import check_layout

__all__ = [
    "RunConfig",
    "check_layout",
    "config_to_dict",
    "config_to_yaml",
    "load_config",
    "save_config",
]
