"""Bits per byte of classic compressors on the same bytes, the yardstick next to a model's bpb.

Python's zlib, bz2 and lzma modules implement the same formats and levels as `gzip -9`,
`bzip2 -9` and `xz -9e`, with no dependency on the command-line tools being installed.
The bytes are compressed as one stream, as `gzip -9 < all-bytes` would.
"""

from __future__ import annotations

import bz2
import lzma
import zlib


def _gzip9(data: bytes) -> int:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
    return len(c.compress(data) + c.flush())


def _bzip2_9(data: bytes) -> int:
    return len(bz2.compress(data, compresslevel=9))


def _xz_9e(data: bytes) -> int:
    return len(lzma.compress(data, format=lzma.FORMAT_XZ, preset=9 | lzma.PRESET_EXTREME))


COMPRESSORS = {"gzip -9": _gzip9, "bzip2 -9": _bzip2_9, "xz -9e": _xz_9e}


def compressor_bpb(data: bytes, names: tuple[str, ...] = tuple(COMPRESSORS)) -> dict[str, float]:
    """{name: bits per byte} for each compressor on `data`."""
    if not data:
        return {}
    return {name: 8.0 * COMPRESSORS[name](data) / len(data) for name in names}
