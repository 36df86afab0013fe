"""Make a PNG fit Discord's upload limit without losing the request in its metadata."""

from __future__ import annotations

import io
import math

from PIL import Image, PngImagePlugin


def _pnginfo(img: Image.Image) -> PngImagePlugin.PngInfo:
    info = PngImagePlugin.PngInfo()
    for k, v in (getattr(img, "text", None) or {}).items():
        info.add_text(k, v)
    return info


def fit_png(png: bytes, limit: int) -> bytes:
    """``png`` if it fits in ``limit`` bytes, else re-encoded (optimised), then downscaled until it fits.

    Text chunks (the request) are kept. Never returns something bigger than ``limit`` unless the
    image is already down to 16 pixels wide.
    """
    if len(png) <= limit:
        return png
    with Image.open(io.BytesIO(png)) as src:
        src.load()
        info = _pnginfo(src)
        img = src.copy()
    out = _encode(img, info)
    while len(out) > limit and min(img.size) > 16:
        factor = max(0.5, min(0.95, math.sqrt(limit / len(out)) * 0.95))
        img = img.resize((max(16, int(img.width * factor)), max(16, int(img.height * factor))),
                         Image.Resampling.LANCZOS)
        out = _encode(img, info)
    return out


def _encode(img: Image.Image, info: PngImagePlugin.PngInfo) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True, pnginfo=info)
    return buf.getvalue()
