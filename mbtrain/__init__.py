"""mbtrain: distributed long-context training of MegaByte byte-level models."""

__version__ = "0.1.0"
