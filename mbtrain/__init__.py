"""mbtrain: distributed long-context training of MegaByte byte-level models."""

from mbtrain.cli.version import version

__version__ = version()
