"""General config machinery: layers (recipe YAML with `base:`, `key=value` overrides) into a
typed dataclass of any schema, interpolation rules, reusable value checks.

Nothing here knows a component: each owns its section's dataclass, and the run config that
combines them lives at the top (`mbtrain.train.run_config`).
"""

from mbtrain.config.checks import Checks
from mbtrain.config.load import build_from_layers, load_typed, problems, save_yaml, to_dict, to_yaml

__all__ = [
    "Checks",
    "build_from_layers",
    "load_typed",
    "problems",
    "save_yaml",
    "to_dict",
    "to_yaml",
]
