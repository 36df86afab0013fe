"""Image files in and out, safely.

Reading checks the file's byte size and the pixel count from the header *before* decoding,
so a decompression bomb is refused without being expanded. Writing puts the whole request in
the PNG's metadata (a ``vqgan-clip`` text chunk of JSON) so any image can be rerun exactly.
"""

from __future__ import annotations

import io
import json
import math
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from engine.config import GenerationConfig, LimitsConfig
from engine.errors import BadImage

META_KEY = "vqgan-clip"
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")  # what the README promises; Pillow reads many more
READABLE = "PNG, JPEG, WebP, GIF or BMP"
ORIENTATION = 0x0112  # the EXIF tag
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_MAX_PIXELS = 40_000_000


def open_image(source: str | Path | bytes, *, what: str = "image", max_bytes: int = DEFAULT_MAX_BYTES,
               max_pixels: int = DEFAULT_MAX_PIXELS, working_size: tuple[int, int] | None = None,
               within: Callable[[int, int], tuple[int, int]] | None = None) -> Image.Image:
    """Decode a file or bytes into a loaded PIL image, or raise ``BadImage`` with one line.

    Only the formats the README names are decoded (PNG, JPEG, WebP, GIF, BMP); 16-bit grey keeps its
    tones (as 8-bit grey) and the EXIF orientation is applied, so a phone photo stands upright.
    A large image is shrunk once, while decoding, so that a huge upload costs one cheap decode
    instead of full-size work in every later step: to at most twice ``working_size``, or to the box
    ``within(width, height)`` gives for the upright picture (aspect kept). JPEG decodes at 1/2, 1/4
    or 1/8 scale (``draft``), others by whole factors (``reduce``) and a final resample.
    """
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
            img: Image.Image = Image.open(io.BytesIO(data), formats=FORMATS)
            w, h = img.size
            if w * h > max_pixels:
                raise BadImage(f"{name}: {w}x{h} is over the {max_pixels:,} pixel limit; use a smaller image")
            turned = img.format in ("JPEG", "MPO") and img.getexif().get(ORIENTATION) in (5, 6, 7, 8)
            upright = (h, w) if turned else (w, h)  # a phone photo is often stored on its side
            box = (within(*upright) if within is not None
                   else None if working_size is None else (2 * working_size[0], 2 * working_size[1]))
            if box is not None and img.format in ("JPEG", "MPO"):  # decode at 1/2, 1/4 or 1/8 scale
                img.draft(None, box[::-1] if turned else box)
            img.load()
            ImageOps.exif_transpose(img, in_place=True)
            img = _eight_bit(img)
            if box is not None:
                img = _shrink(img, box)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"{name}: over the {max_pixels:,} pixel limit; use a smaller image") from None
    except UnidentifiedImageError:
        raise BadImage(f"{name}: not an image in a known format ({READABLE})") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise BadImage(f"{name}: the image is damaged or truncated ({e})") from None
    return img


def _eight_bit(img: Image.Image) -> Image.Image:
    """16-bit grey (PNG: ``I;16``, ``I`` in older Pillows) -> 8-bit grey with the same tones;
    ``convert`` would clip every value over 255 to white."""
    if img.mode.startswith("I;16") or img.mode == "I":
        arr = np.asarray(img).astype(np.int64).clip(0, 65535)
        return Image.fromarray(((arr * 255 + 32767) // 65535).astype(np.uint8), "L")
    return img


def _shrink(img: Image.Image, box: tuple[int, int]) -> Image.Image:
    """Fit inside ``box``, aspect kept: whole-factor ``reduce`` first, then Lanczos (``thumbnail``)."""
    if img.width <= box[0] and img.height <= box[1]:
        return img
    if img.mode in ("P", "1"):  # palette images resize by nearest neighbour: go to true colour first
        img = img.convert("RGBA" if img.has_transparency_data else "RGB")
    img.thumbnail(box, Image.Resampling.LANCZOS, reducing_gap=2.0)
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


def check_mask_shape(mask: tuple[int, int], image: tuple[int, int]) -> None:
    """A mask must have its image's aspect (within 2%): it is stretched onto the image's working size."""
    (mw, mh), (iw, ih) = mask, image
    if abs(mw / mh - iw / ih) > 0.02 * (iw / ih):
        raise BadImage(f"mask is {mw}x{mh} but the image is {iw}x{ih}: make the mask the same shape as the image")


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


SIZE_MULTIPLE = 16
"""Sizes chosen for an aspect are in 16s: a multiple of every shipped VQGAN's factor (8 and 16)."""


def aspect_size(aspect: tuple[int, int], generation: GenerationConfig, limits: LimitsConfig) -> tuple[int, int]:
    """The size for an aspect (``--ar 16:9``, the bot's ``aspect:``): as near as the configured pixel count
    (``generation.width x height``, at most ``limits.max_pixels``) as whole cells allow, inside the limits."""
    return fit_size(*aspect, limits.max_width, limits.max_height, limits.max_pixels,
                    target_pixels=min(generation.width * generation.height, limits.max_pixels),
                    multiple=SIZE_MULTIPLE)


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


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(data: bytes) -> tuple[int, int] | None:
    """The (width, height) a PNG's header (its first chunk, IHDR) declares, read without decoding or even
    parsing the rest: a 60000x60000 picture costs nothing to refuse. None when the bytes are not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return (width, height) if width > 0 and height > 0 else None


def read_metadata(source: str | Path | bytes, *, what: str = "image") -> dict[str, Any] | None:
    """The JSON object this engine wrote into a PNG, or None when there is none.

    The text is anyone's to write: anything but a JSON object is a ``BadImage`` with one line.
    """
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    name = what if isinstance(source, bytes) else f"{what} {Path(source).name}"
    try:
        img = Image.open(io.BytesIO(data), formats=("PNG",))
        text = img.info.get(META_KEY)
    except (UnidentifiedImageError, OSError, SyntaxError, EOFError, struct.error):
        return None
    except ValueError as e:  # e.g. a text chunk over Pillow's size limit
        raise BadImage(f"{name}: its metadata cannot be read ({e})") from None
    if not text:
        return None
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError):
        raise BadImage(f"{name}: its {META_KEY} metadata is not valid JSON") from None
    if not isinstance(meta, dict):
        raise BadImage(f"{name}: its {META_KEY} metadata is not a JSON object")
    return meta
