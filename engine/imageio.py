"""Image files in and out, safely.

Reading checks the file's byte size and the pixel count from the header *before* decoding,
so a decompression bomb is refused without being expanded. Writing puts the whole request in
the PNG's metadata (a ``vqgan-clip`` text chunk of JSON) so any image can be rerun exactly.
"""

from __future__ import annotations

import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

from PIL import Image, PngImagePlugin, UnidentifiedImageError

from engine.errors import BadImage

META_KEY = "vqgan-clip"
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000


def open_image(source: str | Path | bytes, *, what: str = "image", max_bytes: int = DEFAULT_MAX_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a file or bytes into a loaded PIL image, or raise ``BadImage`` with one line."""
    if isinstance(source, bytes):
        data, name = source, what
    else:
        path = Path(source)
        name = f"{what} {path.name}"
        if not path.is_file():
            raise BadImage(f"{name}: file not found")
        size = path.stat().st_size
        if size == 0:
            raise BadImage(f"{name}: the file is empty")
        if size > max_bytes:
            raise BadImage(f"{name}: {size / 2**20:.1f} MiB is over the {max_bytes / 2**20:.0f} MiB limit")
        data = path.read_bytes()
    if not data:
        raise BadImage(f"{name}: the file is empty")
    if len(data) > max_bytes:
        raise BadImage(f"{name}: {len(data) / 2**20:.1f} MiB is over the {max_bytes / 2**20:.0f} MiB limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise BadImage(f"{name}: {w}x{h} is over the {max_pixels:,} pixel limit; use a smaller image")
            img.load()
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"{name}: over the {max_pixels:,} pixel limit; use a smaller image") from None
    except UnidentifiedImageError:
        raise BadImage(f"{name}: not an image in a known format (PNG, JPEG, WebP, GIF or BMP)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise BadImage(f"{name}: the image is damaged or truncated ({e})") from None
    return img


def load_rgb(source: str | Path | bytes, **limits: Any) -> Image.Image:
    img = open_image(source, **limits)
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


def load_mask(source: str | Path | bytes, **limits: Any) -> Image.Image:
    """A mask as 8-bit grey: white = change. A mask with transparency uses its alpha too."""
    img = open_image(source, what="mask", **limits)
    if img.mode in ("RGBA", "LA", "P"):
        rgba = img.convert("RGBA")
        grey = rgba.convert("L")
        alpha = rgba.getchannel("A")
        return Image.composite(grey, Image.new("L", img.size, 0), alpha)
    return img.convert("L")


def fit_size(width: int, height: int, max_width: int, max_height: int, max_pixels: int,
             target_pixels: int | None = None, multiple: int = 16) -> tuple[int, int]:
    """Keep the aspect of (width, height), scaled to ``target_pixels`` when given (else kept), then
    shrunk into the limits, in whole VQGAN cells (``multiple``, nearest)."""
    scale = 1.0 if target_pixels is None else math.sqrt(target_pixels / max(1, width * height))
    w, h = width * scale, height * scale
    shrink = min(1.0, max_width / w, max_height / h)
    top_w, top_h = max(multiple, max_width // multiple * multiple), max(multiple, max_height // multiple * multiple)
    out_w = min(max(multiple, round(w * shrink / multiple) * multiple), top_w)
    out_h = min(max(multiple, round(h * shrink / multiple) * multiple), top_h)
    while out_w * out_h > max_pixels and max(out_w, out_h) > multiple:
        if out_w >= out_h:
            out_w -= multiple
        else:
            out_h -= multiple
    return out_w, out_h


def png_bytes(img: Image.Image, metadata: dict[str, Any] | None = None) -> bytes:
    info = PngImagePlugin.PngInfo()
    if metadata is not None:
        info.add_text(META_KEY, json.dumps(metadata, sort_keys=True))
        if prompt := metadata.get("request", {}).get("prompt"):
            info.add_text("Description", str(prompt))
        info.add_text("Software", f"vqgan-clip {metadata.get('engine_version', '')}".strip())
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def read_metadata(source: str | Path | bytes) -> dict[str, Any] | None:
    """The JSON this engine wrote into a PNG, or None."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        img = Image.open(io.BytesIO(data))
        text = img.info.get(META_KEY)
    except (UnidentifiedImageError, OSError):
        return None
    return json.loads(text) if text else None
