"""The pinned package versions, read from data_prep/corpora/pins.json.

The table is data, not code: refreshing a pin after a Debian point release touches one line
of the JSON and nothing that runs. JSON rather than TOML because the fetcher is stdlib only
and tomllib needs Python 3.11 (the project supports 3.10).
"""

from __future__ import annotations

import json
from pathlib import Path

PINS_FILE = Path(__file__).resolve().parents[1] / "pins.json"


def load_pins(path: Path = PINS_FILE) -> tuple[dict[str, tuple[str, str]], str]:
    """(Debian package -> (version, .deb sha256), Pillow version). The Debian pins are grouped
    by corpus in the file for the reader; a package listed twice is an error, not a choice."""
    table = json.loads(path.read_text())
    pins: dict[str, tuple[str, str]] = {}
    for corpus, packages in table["debian"].items():
        for name, pin in packages.items():
            if name in pins:
                raise ValueError(f"{path}: {name} pinned twice (again under {corpus})")
            pins[name] = (pin["version"], pin["sha256"])
    return pins, table["pypi"]["pillow"]


# name -> (version, sha256 of the .deb as downloaded on 2025-12 from Debian bookworm main/security)
PINS, PILLOW_VERSION = load_pins()
