"""Decode, orient and downscale the photographs of the image corpus to raw RGB24 files.

Runs under `<out>/.venv/bin/python` (Pillow) as
`python -m data_prep.corpora.fetch.decode_images MANIFEST MAX_SIDE`, so it imports nothing
but the stdlib and Pillow. MANIFEST is a JSON list of {"src": jpeg, "dst_stem": path}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def decode_images(manifest: str, max_side: str) -> int:
    """Runs under <out>/.venv/bin/python (Pillow)."""
    from PIL import Image, ImageOps

    limit = int(max_side)
    for job in json.loads(Path(manifest).read_text()):
        with Image.open(job["src"]) as im:
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGB")
            w, h = im.size
            scale = min(1.0, limit / max(w, h))
            if scale < 1.0:
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                im = im.resize(size, Image.Resampling.LANCZOS)
            w, h = im.size
            data = im.tobytes()
        assert len(data) == w * h * 3
        dst = f"{job['dst_stem']}_{w}x{h}.rgb"
        Path(dst).write_bytes(data)
        print(f"  {Path(job['src']).name} -> {Path(dst).name} ({len(data):,} bytes)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(decode_images(*sys.argv[1:]))
