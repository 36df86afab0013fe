"""Discord inputs -> an engine ``Request``, with every refusal as one line a person can act on.

Checks run cheapest first so that most refusals are answered before the interaction is deferred:
access (guild, channel, role), pending jobs, the request itself, then attachments from their payload
(where they are, type, bytes, pixels). Only then are attachments downloaded, and checked again with
PIL, because a payload can lie about what the file holds. A request being prepared (downloads,
collages) counts against its owner's pending limit like a queued job (``Preparing``), and a big
upload is shrunk once, as it is decoded, to twice the largest size a job could paint it at.
Stored uploads are pruned once they are older than any job that could still refer to them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from PIL import Image

from bot import roles
from bot.cdn import get_attachment
from bot.config import BotConfig
from bot.endpoints import cdn_url, may_download
from bot.origin import Origin
from engine.errors import BadImage, UserError, quoted
from engine.media import imageio
from engine.spec.choices import check_offered, with_choices
from engine.spec.request import Request, check_limits, check_prompt_length

if TYPE_CHECKING:
    from engine.jobs.queue import Job, JobQueue

ASPECTS: dict[str, tuple[int, int]] = {
    "square": (1, 1),
    "landscape": (3, 2),
    "wide": (16, 9),
    "portrait": (2, 3),
    "tall": (9, 16),
}
SIZE_RE = re.compile(r"^\s*(\d{2,5})\s*[x×*]\s*(\d{2,5})\s*$", re.I)
PENDING_STATES = ("queued", "running")
# File names of the formats the engine reads (engine.media.imageio.FORMATS), for attachments without a content type.
IMAGE_EXTENSIONS = tuple(sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in imageio.FORMATS))


class Refused(UserError):
    """The person, place or input is not allowed; the message says what to change."""


# --------------------------------------------------------------------------- access


def check_access(cfg: BotConfig, *, guild_id: int | None, channel_id: int | None,
                 parent_id: int | None = None, member: Any = None) -> None:
    """Raise ``Refused`` unless this guild/channel/member may use the bot."""
    d = cfg.discord
    if guild_id is None:
        if not d.allow_dms:
            raise Refused("I only paint in server channels, not in direct messages")
        return
    if d.allowed_guilds and guild_id not in d.allowed_guilds:
        raise Refused("I am not enabled in this server")
    if d.allowed_channels and channel_id not in d.allowed_channels and parent_id not in d.allowed_channels:
        where = ", ".join(f"<#{c}>" for c in d.allowed_channels[:5])
        raise Refused(f"I don't paint in this channel: try {where}")
    if d.allowed_roles:
        if not roles.holds_any(cfg, d.allowed_roles, member, guild_id) and not is_admin(member):
            raise Refused("you need one of the roles allowed to use me; ask a moderator")


def is_admin(member: Any) -> bool:
    perms = getattr(member, "guild_permissions", None)
    return bool(perms and perms.administrator)


def is_moderator(cfg: BotConfig, member: Any, guild_id: int | None) -> bool:
    """A moderator of server ``guild_id`` (where ``member`` is acting): Administrator there, or one of
    ``moderator_roles`` of that server (``bot.roles``). Nobody moderates in direct messages."""
    if member is None or guild_id is None:
        return False
    return is_admin(member) or roles.holds_any(cfg, cfg.discord.moderator_roles, member, guild_id)


def moderates(cfg: BotConfig, member: Any, guild_id: int | None, job: Job) -> bool:
    """Whether ``member``, acting on server ``guild_id``, may act on ``job`` as a moderator: only on
    the server the job was asked in (its origin's guild), never from another one."""
    return guild_id is not None and guild_of(job) == guild_id and is_moderator(cfg, member, guild_id)


def guild_of(job: Job) -> int | None:
    """The server a job was asked in; None for direct messages and jobs not made by the bot."""
    return Origin.read(job.origin, job.id).guild_id


def priority_for(cfg: BotConfig, member: Any, guild_id: int | None) -> int:
    """``[queue] role_priority``: the highest priority among the member's roles on ``guild_id``."""
    return roles.priority(cfg, member, guild_id)


def check_access_interaction(cfg: BotConfig, interaction: discord.Interaction) -> None:
    ch = interaction.channel
    parent = getattr(ch, "parent_id", None)
    check_access(cfg, guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                 parent_id=parent, member=interaction.user)


def check_access_message(cfg: BotConfig, message: discord.Message) -> None:
    ch = message.channel
    check_access(cfg, guild_id=message.guild.id if message.guild else None, channel_id=ch.id,
                 parent_id=getattr(ch, "parent_id", None), member=message.author)


class Preparing:
    """Requests still being prepared (downloading, composing) per owner, before the queue knows them.

    They count against the pending limit, so that one person cannot start many downloads at once.
    ``check_pending`` then ``hold`` with no ``await`` between them: the event loop makes the pair atomic.
    ``hold`` gives a ``release`` to call as soon as the queue holds the job (or refused it), so that
    it is never counted twice.
    """

    def __init__(self) -> None:
        self._count: Counter[str] = Counter()

    def count(self, owner: str) -> int:
        return self._count[owner]

    @contextlib.contextmanager
    def hold(self, owner: str) -> Iterator[Callable[[], None]]:
        """Count one request of ``owner`` until ``release()`` or the end of the block."""
        held = True

        def release() -> None:
            nonlocal held
            if held:
                held = False
                self._count[owner] -= 1
                if self._count[owner] <= 0:
                    del self._count[owner]

        self._count[owner] += 1
        try:
            yield release
        finally:
            release()


def check_pending(cfg: BotConfig, queue: JobQueue, owner: str, preparing: Preparing | None = None) -> None:
    """A fast, early copy of the queue's own per-owner limit (the queue has the last word), counting
    requests still downloading too."""
    mine = sum(1 for j in queue.jobs_of(owner) if j.state in PENDING_STATES)
    mine += preparing.count(owner) if preparing is not None else 0
    limit = cfg.queue.per_owner_pending
    if mine >= limit:
        raise Refused(f"you already have {mine} jobs waiting (limit {limit}): wait for one or /cancel it")


# --------------------------------------------------------------------------- sizes


def fit_size(w: int, h: int, cfg: BotConfig) -> tuple[int, int]:
    """The aspect of ``w x h`` at the configured default pixel count, inside the limits, in 16s."""
    g, lim = cfg.generation, cfg.limits
    return imageio.fit_size(w, h, lim.max_width, lim.max_height, lim.max_pixels,
                            target_pixels=min(g.width * g.height, lim.max_pixels))


def parse_size(cfg: BotConfig, size: str | None, aspect: str | None) -> tuple[int | None, int | None]:
    """``"512x384"`` or an aspect name -> width, height (``None`` = config default)."""
    if size:
        m = SIZE_RE.match(size)
        if not m:
            raise Refused(f"size {quoted(size)} should look like 512x384")
        return int(m.group(1)), int(m.group(2))
    if aspect:
        if aspect not in ASPECTS:
            raise Refused(f"aspect should be one of {', '.join(ASPECTS)}")
        return fit_size(*ASPECTS[aspect], cfg)
    return None, None


# --------------------------------------------------------------------------- building


def build_request(cfg: BotConfig, **fields: Any) -> Request:
    """``Request.from_config`` + ``check_limits``; both raise one-line ``UserError``s."""
    check_prompt_length(fields.get("prompt") or "", cfg.limits)  # before parsing: a huge prompt is refused for its size
    model, clip = fields.pop("model", None), fields.pop("clip", None)
    if model is not None or clip is not None:  # chosen by name among [models] vqgan_choices / clip_choices
        fields["models"] = with_choices(cfg.models.spec(), cfg.models, vqgan=model, clip=clip).model_dump()
    req = Request.from_config(cfg, **fields)
    check_limits(req, cfg.limits)
    return req


def rerun_request(cfg: BotConfig, req: Request, seed: int) -> Request:
    """The same request with a new seed, validated again (limits may have changed since)."""
    new = req.with_changes(seed=seed)
    check_limits(new, cfg.limits)
    check_offered(new.models, cfg.models)  # the operator may have withdrawn a model since
    return new


# --------------------------------------------------------------------------- attachments


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
    w, h = imageio.fit_size(width, height, lim.max_width, lim.max_height, lim.max_pixels,
                            target_pixels=lim.max_pixels)
    return 2 * w, 2 * h


def decode_image(cfg: BotConfig, data: bytes, what: str = "image") -> Image.Image:
    """Decode with the engine's guards (bytes, header pixels before decoding, truncation), shrunk
    while decoding to ``input_box``, keeping transparency."""
    lim = cfg.limits
    img = imageio.open_image(data, what=f"the {what}", max_bytes=lim.max_input_bytes,
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
    tmp = dest.with_name(f"{dest.stem}.{uuid.uuid4().hex}.tmp")
    try:
        img.save(tmp, format="PNG")
        try:
            os.replace(tmp, dest)
        except OSError:
            if not dest.is_file():  # e.g. Windows refuses to replace a file being read
                raise
    finally:
        tmp.unlink(missing_ok=True)


def image_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size
