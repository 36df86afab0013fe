"""Plain records kept by the fake Discord server, and the Discord JSON payloads built from them."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import mimetypes
import struct
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DISCORD_EPOCH_MS = 1420070400000

# a REST handler: (the recorded request, *path groups) -> Reply
Reply = tuple[int, Any]  # (HTTP status, JSON body or None for 204)
Handler = Callable[..., Awaitable[Reply]]
# (HTTP method, path regex matched in full against the path without /api/v10, handler)
Route = tuple[str, str, Handler]


class Snowflakes:
    """Strictly increasing, valid Discord snowflakes (timestamp in the top 42 bits)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()
        self._inc = itertools.count()

    def next(self) -> int:
        with self._lock:
            ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
            value = (ms << 22) | (1 << 17) | (next(self._inc) & 0xFFF)
            if value <= self._last:
                value = self._last + 1
            self._last = value
            return value


def iso(ts: dt.datetime | None = None) -> str:
    return (ts or now()).isoformat()


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def image_size(data: bytes) -> tuple[int | None, int | None]:
    """(width, height) of PNG/JPEG/GIF/WebP bytes, (None, None) for anything else."""
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        w, h = struct.unpack("<HH", data[6:10])
        return w, h
    try:  # JPEG, WebP, ...: let Pillow read the header when it is installed
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:
        return None, None


def guess_content_type(filename: str, given: str | None = None) -> str | None:
    if given and given != "application/octet-stream":
        return given
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or given


@dataclass
class Role:
    id: int
    name: str
    permissions: int = 0
    position: int = 1
    managed: bool = False

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": self.position,
            "permissions": str(self.permissions),
            "managed": self.managed,
            "mentionable": False,
            "flags": 0,
        }


@dataclass(eq=False)
class User:
    id: int
    name: str
    bot: bool = False
    roles: list[int] = field(default_factory=list)  # role ids, without @everyone
    joined_at: dt.datetime = field(default_factory=now)

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "username": self.name,
            "global_name": self.name,
            "discriminator": "0",
            "avatar": None,
            "bot": self.bot,
            "public_flags": 0,
        }

    def member_payload(self, with_user: bool = True, guild: Guild | None = None) -> dict[str, Any]:
        """As a member of ``guild`` (its roles only); None = every role the user holds anywhere."""
        d: dict[str, Any] = {
            "roles": [str(r) for r in self.roles if guild is None or r in guild.roles],
            "joined_at": iso(self.joined_at),
            "nick": None,
            "avatar": None,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
        }
        if with_user:
            d["user"] = self.payload()
        return d


@dataclass(eq=False)
class Emoji:
    """A server's custom emoji; ``str()`` is how a message or a config names it: ``<a:name:id>``."""

    id: int
    name: str
    animated: bool = False

    def __str__(self) -> str:
        return f"<{'a' if self.animated else ''}:{self.name}:{self.id}>"

    def payload(self) -> dict[str, Any]:
        return {"id": str(self.id), "name": self.name, "animated": self.animated, "roles": [],
                "require_colons": True, "managed": False, "available": True}


@dataclass(eq=False)
class Guild:
    """One server: its roles (``roles[id]`` is @everyone), members, owner and custom emoji.
    Users are shared between guilds; a member's roles in a guild are those of its ``roles``."""

    id: int
    name: str
    owner_id: int = 0
    roles: dict[int, Role] = field(default_factory=dict)
    members: set[int] = field(default_factory=set)  # user ids
    emojis: list[Emoji] = field(default_factory=list)

    @property
    def everyone(self) -> Role:
        return self.roles[self.id]


@dataclass(eq=False)
class Channel:
    """A guild text channel (type 0) or a thread (type 11 public / 12 private)."""

    id: int
    guild_id: int
    name: str
    type: int = 0
    position: int = 0
    parent_id: int | None = None  # parent text channel for threads
    owner_id: int | None = None  # thread creator
    topic: str | None = None
    # target id -> (type 0 role / 1 member, allow bits, deny bits)
    overwrites: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    archived: bool = False
    locked: bool = False
    auto_archive_duration: int = 1440
    deleted: bool = False
    created_at: dt.datetime = field(default_factory=now)
    last_message_id: int | None = None
    message_count: int = 0
    starter_message_id: int | None = None  # threads started from a message

    @property
    def is_thread(self) -> bool:
        return self.type in (10, 11, 12)

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    def payload(self, bot_id: int | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "guild_id": str(self.guild_id),
            "name": self.name,
            "last_message_id": str(self.last_message_id) if self.last_message_id else None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        if self.is_thread:
            d.update(
                parent_id=str(self.parent_id),
                owner_id=str(self.owner_id),
                message_count=self.message_count,
                total_message_sent=self.message_count,
                member_count=1,
                thread_metadata={
                    "archived": self.archived,
                    "auto_archive_duration": self.auto_archive_duration,
                    "archive_timestamp": iso(self.created_at),
                    "locked": self.locked,
                    "invitable": True,
                    "create_timestamp": iso(self.created_at),
                },
            )
            if bot_id is not None:
                d["member"] = {
                    "id": str(self.id),
                    "user_id": str(bot_id),
                    "join_timestamp": iso(self.created_at),
                    "flags": 1,
                }
        else:
            d.update(
                position=self.position,
                parent_id=None,
                topic=self.topic,
                nsfw=False,
                default_auto_archive_duration=1440,
                permission_overwrites=[
                    {"id": str(tid), "type": t, "allow": str(a), "deny": str(dn)}
                    for tid, (t, a, dn) in self.overwrites.items()
                ],
            )
        return d


@dataclass(eq=False)
class Attachment:
    id: int
    filename: str
    data: bytes
    url: str
    content_type: str | None = None
    width: int | None = None
    height: int | None = None
    description: str | None = None
    ephemeral: bool = False

    @property
    def size(self) -> int:
        return len(self.data)

    def payload(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
            "width": self.width,
            "height": self.height,
            "ephemeral": self.ephemeral,
        }
        if self.description is not None:
            d["description"] = self.description
        return d


@dataclass(eq=False)
class Message:
    id: int
    channel_id: int
    guild_id: int
    author: User
    content: str = ""
    attachments: list[Attachment] = field(default_factory=list)
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    # emoji ("🎨" or "name:id") -> user ids that reacted, in order
    reactions: dict[str, list[int]] = field(default_factory=dict)
    message_reference: dict[str, Any] | None = None
    mentions: list[User] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    created_at: dt.datetime = field(default_factory=now)
    edited_at: dt.datetime | None = None
    webhook_id: int | None = None
    interaction_id: int | None = None  # set for interaction responses / followups
    thread_id: int | None = None  # thread started from this message
    deleted: bool = False
    tts: bool = False

    EPHEMERAL = 64
    LOADING = 128

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & self.EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True for a deferred ("thinking...") interaction response not yet filled in."""
        return bool(self.flags & self.LOADING)

    @property
    def reply_to(self) -> int | None:
        ref = self.message_reference
        return int(ref["message_id"]) if ref and ref.get("message_id") else None


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> dict[str, Any]:
        d: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            d["errors"] = self.errors
        return d


def unknown_channel() -> ApiError:
    return ApiError(404, 10003, "Unknown Channel")


def unknown_message() -> ApiError:
    return ApiError(404, 10008, "Unknown Message")


def missing_permissions() -> ApiError:
    return ApiError(403, 50013, "Missing Permissions")


def invalid_webhook_token() -> ApiError:
    return ApiError(401, 50027, "Invalid Webhook Token")


@dataclass
class UploadedFile:
    index: int
    filename: str
    data: bytes
    content_type: str | None


@dataclass
class Request:
    """One REST call the client made (recorded in ``server.requests``)."""

    method: str
    path: str  # without /api/v10, segments URL-decoded, e.g. /channels/1/messages/2/reactions/🎨/@me
    query: dict[str, str]
    json: Any  # JSON body, or payload_json of a multipart body
    files: list[UploadedFile]
    at: float  # loop.time()
    status: int = 0
    response: Any = None


@dataclass
class GatewayEvent:
    t: str
    d: dict[str, Any]
    seq: int | None  # None when no bot session existed
    at: float


def json_response(status: int, body: Any, headers: dict[str, str] | None = None) -> web.Response:
    if status == 204 or body is None:
        return web.Response(status=204, headers=headers)
    # discord.py's json_or_text wants exactly "application/json" (no charset)
    h = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(status=status, body=json.dumps(body).encode(), headers=h)
