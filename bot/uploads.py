"""Pictures people hand the bot: attachments checked from their payload, downloaded, decoded with
limits, stored as PNGs for the engine, and pruned once no job can still refer to them.

A payload can lie about what the file holds, so a download is checked again with PIL; a big upload is
shrunk once, as it is decoded, to twice the largest size a job could paint it at.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import discord
from PIL import Image

from bot.cdn import get_attachment
from bot.config import BotConfig
from bot.endpoints import cdn_url, may_download
from engine import IMAGE_FORMATS, BadImage, UserError, fit_size, open_image, quoted, write_atomic

if TYPE_CHECKING:
    pass



IMAGE_EXTENSIONS = tuple(sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in IMAGE_FORMATS))


@dataclass(frozen=True)
class ImageRef:
    """What a payload says about an attachment, before we download it."""

    url: str
    filename: str
    content_type: str | None
    size: int
    width: int | None
    height: int | None

    @classmethod
    def of(cls, a: discord.Attachment) -> ImageRef:
        return cls(a.url, a.filename, a.content_type, a.size, a.width, a.height)


def looks_like_image(a: discord.Attachment) -> bool:
    ct = (a.content_type or "").split(";")[0].strip().lower()
    if ct:
        return ct.startswith("image/")
    return a.filename.lower().endswith(IMAGE_EXTENSIONS)


def image_attachments(message: discord.Message) -> list[discord.Attachment]:
    return [a for a in message.attachments if looks_like_image(a)]


def check_attachment(cfg: BotConfig, ref: ImageRef, what: str = "image") -> None:
    """Place, type, bytes and pixels from the payload: refuse before downloading anything."""
    lim = cfg.limits
    if not may_download(ref.url, cfg.discord):
        raise BadImage(f"the {what} {quoted(ref.filename)} is not on Discord; attach the file itself")
    ct = (ref.content_type or "").split(";")[0].strip().lower()
    if ct and ct not in cfg.discord.image_types:
        kinds = ", ".join(t.removeprefix("image/").upper() for t in cfg.discord.image_types)
        raise BadImage(f"the {what} {quoted(ref.filename)} is {quoted(ct)}; attach a {kinds} image")
    if not ct and not ref.filename.lower().endswith(IMAGE_EXTENSIONS):
        raise BadImage(f"the {what} {quoted(ref.filename)} is not an image; attach a PNG, JPEG or WEBP")
    if ref.size > lim.max_input_bytes:
        raise BadImage(f"the {what} is {_mib(ref.size)}; the limit is {_mib(lim.max_input_bytes)}")
    if ref.width and ref.height and ref.width * ref.height > lim.max_input_pixels:
        raise BadImage(f"the {what} is {ref.width}x{ref.height}; the limit is {lim.max_input_pixels:,} pixels")


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def input_box(cfg: BotConfig, width: int, height: int) -> tuple[int, int]:
    """Twice the largest size a job may paint a ``width x height`` picture at: more is never used."""
    lim = cfg.limits
    w, h = fit_size(width, height, lim.max_width, lim.max_height, lim.max_pixels,
                            target_pixels=lim.max_pixels)
    return 2 * w, 2 * h


def decode_image(cfg: BotConfig, data: bytes, what: str = "image") -> Image.Image:
    """Decode with the engine's guards (bytes, header pixels before decoding, truncation), shrunk
    while decoding to ``input_box``, keeping transparency."""
    lim = cfg.limits
    img = open_image(data, what=f"the {what}", max_bytes=lim.max_input_bytes,
                             max_pixels=lim.max_input_pixels, within=lambda w, h: input_box(cfg, w, h))
    if img.mode not in ("RGB", "L", "RGBA"):
        # keep transparency (palette or grey+alpha): transparent areas are holes to fill, not white
        keep_alpha = "A" in img.getbands() or "transparency" in img.info
        img = img.convert("RGBA" if keep_alpha else "RGB")
    return img


async def download(bot: discord.Client, cfg: BotConfig, ref: ImageRef, what: str = "image") -> Path:
    """Check, download, check again and store as ``data_dir/uploads/<sha256>.png``; returns the path."""
    check_attachment(cfg, ref, what)  # also: only from Discord's CDN or the API base
    url = cdn_url(ref.url, cfg.discord)
    try:
        data = await get_attachment(bot, url, cfg.discord, cfg.limits.max_input_bytes, what)
    except UserError:
        raise
    except Exception:
        raise UserError(f"I could not download the {what}; upload it again") from None
    digest = hashlib.sha256(data).hexdigest()
    dest = cfg.discord.data_path / "uploads" / f"{digest}.png"
    if dest.exists():
        dest.touch()  # in use again: keep it past the next prune
        return dest
    img = await asyncio.to_thread(decode_image, cfg, data, what)
    await asyncio.to_thread(save_png, img, dest)
    return dest


def prune_uploads(cfg: BotConfig) -> int:
    """Delete uploads unused for longer than the queue keeps jobs (no job can refer to them)."""
    folder = cfg.discord.data_path / "uploads"
    cutoff = time.time() - cfg.queue.keep_days * 86400
    gone = 0
    for f in [*folder.glob("*.png"), *folder.glob("*.tmp")] if folder.is_dir() else ():
        try:
            if f.stat().st_mtime < cutoff:
                f.unlink()
                gone += 1
        except OSError:
            pass
    return gone


def save_png(img: Image.Image, dest: Path) -> None:
    """Write atomically: a half-written upload must never be read by a job. Files are named by their
    content, so several people sending the same picture write the same ``dest`` at once: each writes
    its own temporary file, and a ``dest`` already in place is as good as our own."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        write_atomic(dest, lambda tmp: img.save(tmp, format="PNG"))
    except OSError:
        if not dest.is_file():  # e.g. Windows refuses to replace a file being read
            raise


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size
