"""The viewer's planes as lossless PNG files at zlib level 1, written into gradio's cache, instead
of letting gr.Image encode them at PIL's default level 6: same pixels, and encoding three noisy CT
planes drops from most of a redraw's time to a small part of it (bench/viewer.py)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

PNG_LEVEL = 1


def encode_png(image: Image.Image, level: int = PNG_LEVEL) -> bytes:
    with io.BytesIO() as out:
        image.save(out, format="PNG", compress_level=level)
        return out.getvalue()


def png_file(image: Image.Image, cache_dir: str | Path) -> str:
    """Path of the image as a PNG under cache_dir (named by content, written once)."""
    data = encode_png(image)
    folder = Path(cache_dir) / hashlib.sha256(data).hexdigest()[:32]
    path = folder / "plane.png"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return str(path)
