"""A small fake Discord (REST + gateway + CDN) that a real discord.py 2.x client can connect to.

See README.md in this folder for the API. One guild, one bot, any number of users/channels/threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import secrets
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

import aiohttp
import yarl
from aiohttp import web

from .models import (
    Attachment,
    Channel,
    Message,
    Role,
    Snowflakes,
    User,
    guess_content_type,
    image_size,
    iso,
    now,
)

log = logging.getLogger("fakediscord")

# permission bits (https://discord.com/developers/docs/topics/permissions)
P = {
    "add_reactions": 1 << 6,
    "view_channel": 1 << 10,
    "send_messages": 1 << 11,
    "manage_messages": 1 << 13,
    "embed_links": 1 << 14,
    "attach_files": 1 << 15,
    "read_message_history": 1 << 16,
    "mention_everyone": 1 << 17,
    "use_external_emojis": 1 << 18,
    "use_application_commands": 1 << 31,
    "manage_threads": 1 << 34,
    "create_public_threads": 1 << 35,
    "create_private_threads": 1 << 36,
    "send_messages_in_threads": 1 << 38,
}
ADMINISTRATOR = 1 << 3
ALL_PERMISSIONS = (1 << 53) - 1
EVERYONE_PERMISSIONS = sum(
    P[k]
    for k in (
        "add_reactions",
        "view_channel",
        "send_messages",
        "embed_links",
        "attach_files",
        "read_message_history",
        "use_external_emojis",
        "use_application_commands",
        "create_public_threads",
        "send_messages_in_threads",
    )
)
BOT_PERMISSIONS = EVERYONE_PERMISSIONS | sum(
    P[k] for k in ("manage_messages", "manage_threads", "create_private_threads", "mention_everyone")
)

# gateway intents
I_GUILDS, I_MEMBERS, I_MESSAGES, I_REACTIONS, I_CONTENT = 1 << 0, 1 << 1, 1 << 9, 1 << 10, 1 << 15

TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


def permission_bits(value: Any) -> int:
    """int, discord.Permissions, or an iterable of permission names ('send_messages', ...)."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value
    if hasattr(value, "value"):
        return int(value.value)
    if isinstance(value, str):
        value = [value]
    bits = 0
    for name in value:
        if name in P:
            bits |= P[name]
        else:
            import discord

            bits |= discord.Permissions(**{name: True}).value
    return bits


class ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: dict | None = None):
        super().__init__(f"{status} {code} {message}")
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def body(self) -> dict:
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
    d: dict
    seq: int | None  # None when no bot session existed
    at: float


@dataclass
class Callback:
    """One accepted POST /interactions/{id}/{token}/callback."""

    type: int  # 1 pong, 4 message, 5 deferred message, 6 deferred update, 7 update, 8 autocomplete, 9 modal
    data: dict | None
    files: list[UploadedFile]
    at: float


@dataclass(eq=False)
class Interaction:
    id: int
    token: str
    type: int  # 2 application command, 3 component, 5 modal submit
    payload: dict
    user: User
    channel_id: int
    dispatched_at: float
    server: FakeDiscord = field(repr=False)
    responses: list[Callback] = field(default_factory=list)
    followups: list[Message] = field(default_factory=list)  # created via POST /webhooks/{app}/{token}
    original: Message | None = None  # @original (from callback type 4/5)
    modal: dict | None = None  # data of a type-9 callback
    requests: list[Request] = field(default_factory=list)  # every callback/webhook call, incl. failed
    expired: bool = False

    @property
    def data(self) -> dict:
        return self.payload.get("data", {})

    @property
    def acknowledged(self) -> bool:
        return bool(self.responses)

    @property
    def deferred(self) -> bool:
        return bool(self.responses) and self.responses[0].type in (5, 6)

    @property
    def first_response_delay(self) -> float | None:
        """Seconds from dispatch to the first accepted callback (None if none yet)."""
        return self.responses[0].at - self.dispatched_at if self.responses else None

    @property
    def messages(self) -> list[Message]:
        """Non-deleted messages produced by this interaction: @original then followups."""
        out = [self.original] if self.original else []
        out += [m for m in self.followups if m is not self.original]
        return [m for m in out if not m.deleted]

    async def wait_response(self, timeout: float = 3.0) -> Callback:
        return await self.server.wait_for(lambda: self.responses and self.responses[0], timeout)

    async def wait_followups(self, n: int = 1, timeout: float = 5.0) -> list[Message]:
        return await self.server.wait_for(lambda: len(self.followups) >= n and self.followups, timeout)


@dataclass
class _Fault:
    method: str
    regex: re.Pattern
    status: int
    retry_after: float
    count: int
    body: dict | None
    code: int | None


class _Session:
    def __init__(self, sid: str, intents: int):
        self.id, self.intents, self.seq = sid, intents, 0
        self.buffer: list[dict] = []  # sent payloads (for RESUME)


class _Conn:
    def __init__(self, ws: web.WebSocketResponse, compress: str | None):
        self.ws = ws
        self.zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self.session: _Session | None = None
        self.lock = asyncio.Lock()

    async def send(self, obj: dict) -> None:
        raw = json.dumps(obj, ensure_ascii=False).encode()
        async with self.lock:
            if self.ws.closed:
                return
            try:
                if self.zlib is not None:
                    await self.ws.send_bytes(self.zlib.compress(raw) + self.zlib.flush(zlib.Z_SYNC_FLUSH))
                else:
                    await self.ws.send_str(raw.decode())
            except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:  # peer went away
                log.debug("gateway send failed: %s", exc)


def _json(status: int, body: Any, headers: dict | None = None) -> web.Response:
    if status == 204 or body is None:
        return web.Response(status=204, headers=headers)
    # discord.py's json_or_text wants exactly "application/json" (no charset)
    h = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(status=status, body=json.dumps(body).encode(), headers=h)


class FakeDiscord:
    """Fake Discord API + gateway + CDN on 127.0.0.1. Use ``async with FakeDiscord() as server``."""

    def __init__(self, *, guild_name: str = "Test Guild", heartbeat_interval_ms: int = 41250) -> None:
        self.sf = Snowflakes()
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.message_content = True  # False: privileged message content intent is off
        self.interaction_timeout = 3.0  # seconds to the first callback (then 404 10062 Unknown interaction)
        self.token_ttl = 15 * 60.0  # interaction token lifetime for followups (then 401 50027)
        self.attachment_size_limit = 10 * 1024 * 1024
        self.cdn_delay = 0.0  # seconds each CDN download takes (slow downloads)

        self.requests: list[Request] = []
        self.cdn_requests: list[str] = []  # paths of CDN downloads, in order
        self.unknown_routes: list[Request] = []
        self.events: list[GatewayEvent] = []
        self.identifies: list[dict] = []  # IDENTIFY payloads ('d'), one per (re)connect without resume
        self.resumes: list[dict] = []
        # query of each gateway connect (v, encoding, compress)
        self.gateway_queries: list[dict[str, str]] = []
        self.command_syncs: list[tuple[int | None, list[dict]]] = []  # (guild_id or None, PUT body)
        self.commands: dict[int | None, list[dict]] = {}  # registered commands by scope
        self.interactions: list[Interaction] = []
        self.typing: list[int] = []  # channel ids the bot sent typing to

        self.app_id = self.sf.next()
        self.guild_id = self.sf.next()
        self.guild_name = guild_name
        self.roles: dict[int, Role] = {
            self.guild_id: Role(self.guild_id, "@everyone", EVERYONE_PERMISSIONS, 0)
        }
        self.users: dict[int, User] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self._attachments: dict[int, Attachment] = {}
        self._faults: list[_Fault] = []
        self._denied_thread_channels: set[int] = set()
        self._sessions: dict[str, _Session] = {}
        self._conn: _Conn | None = None  # the connection events go to (the latest IDENTIFY/RESUME)
        self._conns: set[_Conn] = set()
        self._tasks: set[asyncio.Task] = set()

        bot_role = Role(self.sf.next(), "VQGAN Bot", BOT_PERMISSIONS, position=2, managed=True)
        self.roles[bot_role.id] = bot_role
        self.bot_role = bot_role
        self.bot_user = User(self.app_id, "vqgan-bot", bot=True, roles=[bot_role.id])
        self.users[self.bot_user.id] = self.bot_user
        self.owner = self.add_user("owner")
        self.channel = self.add_channel("general")

        self._runner: web.AppRunner | None = None
        self.port: int = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=1024**3)
        app.router.add_get("/", self._gateway)
        app.router.add_route("*", "/api/{version}/{tail:.*}", self._rest)
        app.router.add_get("/{tail:.*}", self._cdn)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        for conn in list(self._conns):
            with contextlib.suppress(Exception):
                await conn.ws.close(code=1001)
        for t in list(self._tasks):
            t.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @contextlib.asynccontextmanager
    async def running(
        self, client: Any, token: str = "fake-token", timeout: float = 10.0, fast_ready: bool = True
    ):
        """Start ``client`` (``client.start(token)`` in a task), wait until it is ready, close it on exit.

        fast_ready lowers discord.py's guild_ready_timeout (2 s by default) to 0.05 s.
        """
        if fast_ready:
            client._connection.guild_ready_timeout = min(client._connection.guild_ready_timeout, 0.05)
        task = asyncio.create_task(client.start(token), name="fakediscord-client")
        try:
            await self.wait_for(lambda: client.is_ready() or task.done(), timeout)
            if task.done():
                task.result()  # raise the start error
                raise RuntimeError("client.start() returned before READY")
            yield client
        finally:
            await client.close()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 5)

    # ------------------------------------------------------------------ world building
    def role(self, name: str, permissions: Any = 0) -> Role:
        """Get the role called ``name``; create it (with ``permissions``) if missing."""
        for r in self.roles.values():
            if r.name == name:
                return r
        r = Role(self.sf.next(), name, permission_bits(permissions), position=1)
        self.roles[r.id] = r
        self._spawn(
            self._dispatch_if_ready(
                "GUILD_ROLE_CREATE", {"guild_id": str(self.guild_id), "role": r.payload()}
            )
        )
        return r

    def add_user(self, name: str, roles: Iterable[str | Role] = (), bot: bool = False) -> User:
        role_ids = [r.id if isinstance(r, Role) else self.role(r).id for r in roles]
        u = User(self.sf.next(), name, bot=bot, roles=role_ids)
        self.users[u.id] = u
        d = {**u.member_payload(), "guild_id": str(self.guild_id)}
        self._spawn(self._dispatch_if_ready("GUILD_MEMBER_ADD", d, intent=I_MEMBERS))
        return u

    def add_channel(self, name: str, topic: str | None = None) -> Channel:
        ch = Channel(self.sf.next(), self.guild_id, name, 0, position=len(self.channels), topic=topic)
        self.channels[ch.id] = ch
        self._spawn(self._dispatch_if_ready("CHANNEL_CREATE", ch.payload(), intent=I_GUILDS))
        return ch

    def get_channel(self, channel: Channel | int) -> Channel | None:
        return self.channels.get(channel if isinstance(channel, int) else channel.id)

    def _member(self, user_id: int) -> User | None:
        return self.users.get(user_id)

    async def set_permissions(
        self, channel: Channel | int, target: User | Role | None = None, *, allow: Any = 0, deny: Any = 0
    ) -> None:
        """Set a permission overwrite on a text channel (target defaults to the bot), dispatch CHANNEL_UPDATE."""
        ch = self._channel(channel)
        target = target or self.bot_user
        ch.overwrites[target.id] = (
            1 if isinstance(target, User) else 0,
            permission_bits(allow),
            permission_bits(deny),
        )
        await self._dispatch_if_ready("CHANNEL_UPDATE", ch.payload(), intent=I_GUILDS)

    def permissions_for(self, user: User, channel: Channel | int) -> int:
        ch = self._channel(channel)
        if ch.is_thread and ch.parent_id in self.channels:
            ch = self.channels[ch.parent_id]
        if user.id == self.owner.id:
            return ALL_PERMISSIONS
        perms = self.roles[self.guild_id].permissions
        for rid in user.roles:
            if rid in self.roles:
                perms |= self.roles[rid].permissions
        if perms & ADMINISTRATOR:
            return ALL_PERMISSIONS
        ow = ch.overwrites
        if self.guild_id in ow:
            perms = (perms & ~ow[self.guild_id][2]) | ow[self.guild_id][1]
        allow = deny = 0
        for rid in user.roles:
            if rid in ow:
                allow |= ow[rid][1]
                deny |= ow[rid][2]
        perms = (perms & ~deny) | allow
        if user.id in ow:
            perms = (perms & ~ow[user.id][2]) | ow[user.id][1]
        return perms

    def _require(self, channel: Channel, *names: str) -> None:
        perms = self.permissions_for(self.bot_user, channel)
        for n in names:
            if not perms & P[n]:
                raise missing_permissions()

    # ------------------------------------------------------------------ lookups for tests
    def messages_in(self, channel: Channel | int, include_deleted: bool = False) -> list[Message]:
        cid = channel if isinstance(channel, int) else channel.id
        return [
            m for m in self.messages.values() if m.channel_id == cid and (include_deleted or not m.deleted)
        ]

    def message(self, message_id: int) -> Message | None:
        return self.messages.get(message_id)

    def thread_for(self, message: Message | int) -> Channel | None:
        mid = message if isinstance(message, int) else message.id
        m = self.messages.get(mid)
        return self.channels.get(m.thread_id) if m and m.thread_id else None

    def threads(self, parent: Channel | int | None = None) -> list[Channel]:
        pid = parent.id if isinstance(parent, Channel) else parent
        return [c for c in self.channels.values() if c.is_thread and (pid is None or c.parent_id == pid)]

    def bot_messages(self, channel: Channel | int | None = None) -> list[Message]:
        ms = self.messages.values() if channel is None else self.messages_in(channel)
        return [m for m in ms if m.author.id == self.bot_user.id and not m.deleted]

    def requests_to(self, method: str, path_regex: str) -> list[Request]:
        rx = re.compile(path_regex)
        return [r for r in self.requests if r.method == method.upper() and rx.search(r.path)]

    async def wait_for(
        self, predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.01
    ) -> Any:
        """Poll ``predicate()`` until it returns something truthy; return that. TimeoutError otherwise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if loop.time() >= deadline:
                raise TimeoutError(f"fakediscord.wait_for timed out after {timeout}s: {predicate}")
            await asyncio.sleep(interval)

    async def wait_ready(self, timeout: float = 10.0) -> None:
        """Wait until a bot session got READY + GUILD_CREATE on a live connection."""
        await self.wait_for(
            lambda: self._conn is not None and not self._conn.ws.closed and self._conn.session is not None,
            timeout,
        )

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.ws.closed

    # ------------------------------------------------------------------ fault injection
    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int = 429,
        retry_after: float = 0.2,
        count: int = 1,
        body: dict | None = None,
        code: int | None = None,
    ) -> None:
        """Answer the next ``count`` REST calls matching (method or '*', re.search on the path without
        /api/v10) with ``status``. 429s carry retry_after + X-RateLimit-*/Retry-After/Via headers."""
        self._faults.append(
            _Fault(method.upper(), re.compile(path_regex), status, retry_after, count, body, code)
        )

    def expire_tokens(self) -> None:
        """Every interaction token issued so far is now expired (15 minutes passed)."""
        for i in self.interactions:
            i.expired = True

    def deny_threads(self, channel: Channel | int) -> None:
        """Thread creation in this channel fails with 403 50013 Missing Permissions."""
        self._denied_thread_channels.add(self._channel(channel).id)

    async def delete_channel(self, channel: Channel | int) -> None:
        ch = self._channel(channel)
        ch.deleted = True
        if ch.is_thread:
            d = {
                "id": str(ch.id),
                "guild_id": str(self.guild_id),
                "parent_id": str(ch.parent_id),
                "type": ch.type,
            }
            await self._dispatch_if_ready("THREAD_DELETE", d, intent=I_GUILDS)
        else:
            await self._dispatch_if_ready("CHANNEL_DELETE", ch.payload(), intent=I_GUILDS)

    async def archive_thread(self, thread: Channel | int, locked: bool = False) -> None:
        ch = self._channel(thread)
        ch.archived, ch.locked = True, locked
        await self._dispatch_if_ready("THREAD_UPDATE", ch.payload(), intent=I_GUILDS)

    async def delete_message(self, message: Message | int) -> None:
        m = self.messages[message if isinstance(message, int) else message.id]
        m.deleted = True
        d = {"id": str(m.id), "channel_id": str(m.channel_id), "guild_id": str(self.guild_id)}
        await self._dispatch_if_ready("MESSAGE_DELETE", d, intent=I_MESSAGES)

    async def reconnect_gateway(self) -> None:
        """Send op 7 RECONNECT: discord.py reconnects and RESUMEs."""
        if self._conn:
            await self._conn.send({"op": 7, "d": None})

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close the bot's gateway socket with ``code`` (4000: discord.py reconnects and RESUMEs)."""
        if self._conn:
            await self._conn.ws.close(code=code)

    # ------------------------------------------------------------------ payloads
    def user_payload(self, u: User) -> dict:
        return u.payload()

    def member_payload(self, u: User, channel: Channel | None = None) -> dict:
        d = u.member_payload()
        if channel is not None:
            d["permissions"] = str(self.permissions_for(u, channel))
        return d

    def guild_payload(self, full: bool = True) -> dict:
        d: dict[str, Any] = {
            "id": str(self.guild_id),
            "name": self.guild_name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner.id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
        }
        if full:
            d.update(
                joined_at=iso(self.bot_user.joined_at),
                large=False,
                unavailable=False,
                member_count=len(self.users),
                members=[u.member_payload() for u in self.users.values()],
                channels=[c.payload() for c in self.channels.values() if not c.is_thread and not c.deleted],
                threads=[
                    c.payload(self.bot_user.id)
                    for c in self.channels.values()
                    if c.is_thread and not c.deleted and not c.archived
                ],
                presences=[],
                voice_states=[],
                stage_instances=[],
                guild_scheduled_events=[],
                soundboard_sounds=[],
                lazy=True,
            )
        return d

    def _can_read_content(self, m: Message) -> bool:
        if m.author.id == self.bot_user.id:
            return True
        if any(u.id == self.bot_user.id for u in m.mentions) or self.bot_user.mention in m.content:
            return True
        intents = self._conn.session.intents if self._conn and self._conn.session else ALL_PERMISSIONS
        return self.message_content and bool(intents & I_CONTENT)

    def message_payload(
        self, m: Message, *, gateway: bool = False, full_content: bool = False, depth: int = 0
    ) -> dict:
        readable = full_content or self._can_read_content(m)
        d: dict[str, Any] = {
            "id": str(m.id),
            "channel_id": str(m.channel_id),
            "author": m.author.payload(),
            "content": m.content if readable else "",
            "timestamp": iso(m.created_at),
            "edited_timestamp": iso(m.edited_at) if m.edited_at else None,
            "tts": m.tts,
            "mention_everyone": False,
            "mentions": [{**u.payload(), "member": u.member_payload(False)} for u in m.mentions],
            "mention_roles": [],
            "attachments": [a.payload() for a in m.attachments] if readable else [],
            "embeds": list(m.embeds) if readable else [],
            "components": list(m.components) if readable else [],
            "pinned": False,
            "type": m.type,
            "flags": m.flags,
        }
        if m.reactions:
            d["reactions"] = [
                {
                    "count": len(users),
                    "count_details": {"burst": 0, "normal": len(users)},
                    "me": self.bot_user.id in users,
                    "me_burst": False,
                    "burst_colors": [],
                    "emoji": self._emoji_payload(e),
                }
                for e, users in m.reactions.items()
                if users
            ]
        if m.webhook_id:
            d["webhook_id"] = str(m.webhook_id)
            d["application_id"] = str(self.app_id)
        if m.interaction_id:
            inter = next((i for i in self.interactions if i.id == m.interaction_id), None)
            if inter is not None:
                d["interaction_metadata"] = {
                    "id": str(inter.id),
                    "type": inter.type,
                    "user": inter.user.payload(),
                    "authorizing_integration_owners": {"0": str(self.guild_id)},
                }
        if m.message_reference:
            d["message_reference"] = m.message_reference
            ref = self.messages.get(int(m.message_reference.get("message_id", 0) or 0))
            if depth == 0:
                d["referenced_message"] = (
                    None if ref is None or ref.deleted else self.message_payload(ref, depth=1)
                )
        if m.thread_id and m.thread_id in self.channels and not self.channels[m.thread_id].deleted:
            d["thread"] = self.channels[m.thread_id].payload()
        if gateway:
            d["guild_id"] = str(m.guild_id)
            if not m.webhook_id:
                d["member"] = m.author.member_payload(False)
        return d

    @staticmethod
    def _emoji_payload(emoji: str) -> dict:
        e = emoji.strip("<>")
        if e.startswith("a:"):
            e = e[2:]
        if ":" in e:
            name, _, eid = e.partition(":")
            return {"id": eid, "name": name}
        return {"id": None, "name": emoji}

    def _channel(self, channel: Channel | int) -> Channel:
        cid = channel if isinstance(channel, int) else channel.id
        ch = self.channels.get(cid)
        if ch is None:
            raise KeyError(f"unknown channel {cid}")
        return ch

    def _store_attachment(
        self,
        channel_id: int,
        filename: str,
        data: bytes,
        content_type: str | None,
        description: str | None = None,
    ) -> Attachment:
        aid = self.sf.next()
        w, h = image_size(data)
        a = Attachment(
            aid,
            filename,
            data,
            url=f"{self.api_base}/attachments/{channel_id}/{aid}/{filename}",
            content_type=guess_content_type(filename, content_type),
            width=w,
            height=h,
            description=description,
        )
        self._attachments[aid] = a
        return a

    # ------------------------------------------------------------------ gateway
    async def dispatch(self, t: str, d: dict, intent: int = 0) -> GatewayEvent:
        """Send a DISPATCH event to the bot session (buffered for RESUME if it is disconnected)."""
        loop = asyncio.get_running_loop()
        conn = self._conn
        session = conn.session if conn else None
        if session is None and self._sessions:
            session = list(self._sessions.values())[-1]
        if session is not None and intent and not session.intents & intent:
            ev = GatewayEvent(t, d, None, loop.time())  # filtered by intents
            self.events.append(ev)
            return ev
        seq = None
        if session is not None:
            session.seq += 1
            seq = session.seq
            payload = {"op": 0, "t": t, "s": seq, "d": d}
            session.buffer.append(payload)
            if conn is not None and conn.session is session:
                await conn.send(payload)
        ev = GatewayEvent(t, d, seq, loop.time())
        self.events.append(ev)
        return ev

    async def _dispatch_if_ready(self, t: str, d: dict, intent: int = 0) -> None:
        if self._sessions:
            await self.dispatch(t, d, intent)

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return _json(200, {"url": self.gateway_url})
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        self.gateway_queries.append(dict(request.query))
        conn = _Conn(ws, request.query.get("compress"))
        self._conns.add(conn)
        try:
            await conn.send(
                {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["fake"]}}
            )
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    data = json.loads(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    data = json.loads(msg.data.decode())
                else:
                    continue
                await self._gateway_op(conn, data)
        finally:
            self._conns.discard(conn)
            if self._conn is conn:
                self._conn = None
        return ws

    async def _gateway_op(self, conn: _Conn, msg: dict) -> None:
        op, d = msg.get("op"), msg.get("d")
        if op == 1:  # HEARTBEAT
            await conn.send({"op": 11})
        elif op == 2:  # IDENTIFY
            self.identifies.append(d)
            session = _Session(secrets.token_hex(16), int(d.get("intents", 0) or 0))
            self._sessions = {session.id: session}  # one bot session at a time; older ones can't resume
            conn.session = session
            self._conn = conn  # newest connection wins: older sockets get no more events
            session.seq += 1
            ready = {
                "v": 10,
                "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0},
                "guilds": [{"id": str(self.guild_id), "unavailable": True}],
                "session_id": session.id,
                "session_type": "normal",
                "resume_gateway_url": self.gateway_url,
                "application": {"id": str(self.app_id), "flags": 1 << 19},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": [],
                "user_settings": {},
                "_trace": ["fake-gateway"],
            }
            payload = {"op": 0, "t": "READY", "s": session.seq, "d": ready}
            session.buffer.append(payload)
            await conn.send(payload)
            await self.dispatch("GUILD_CREATE", self.guild_payload())
        elif op == 6:  # RESUME
            self.resumes.append(d)
            session = self._sessions.get(d.get("session_id"))
            if session is None:
                await conn.send({"op": 9, "d": False})
                return
            conn.session = session
            self._conn = conn
            last = int(d.get("seq") or 0)
            for p in session.buffer:
                if p["s"] > last:
                    await conn.send(p)
            session.seq += 1
            await conn.send({"op": 0, "t": "RESUMED", "s": session.seq, "d": {"_trace": ["fake"]}})
        elif op == 8:  # REQUEST_GUILD_MEMBERS
            members = [u.member_payload() for u in self.users.values()]
            uids = d.get("user_ids")
            if uids:
                uids = {int(x) for x in (uids if isinstance(uids, list) else [uids])}
                members = [m for m in members if int(m["user"]["id"]) in uids]
            chunk = {
                "guild_id": str(self.guild_id),
                "members": members,
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
                "presences": [],
            }
            if d.get("nonce"):
                chunk["nonce"] = d["nonce"]
            await self.dispatch("GUILD_MEMBERS_CHUNK", chunk)
        # op 3 presence, op 4 voice state: ignored

    # ------------------------------------------------------------------ CDN
    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        self.cdn_requests.append(request.path)
        if self.cdn_delay:
            await asyncio.sleep(self.cdn_delay)
        parts = request.path.strip("/").split("/")
        if parts[0] in ("attachments", "ephemeral-attachments") and len(parts) >= 3:
            with contextlib.suppress(ValueError):
                a = self._attachments.get(int(parts[2]))
                if a is not None:
                    return web.Response(
                        body=a.data, content_type=a.content_type or "application/octet-stream"
                    )
        if parts[0] in ("embed", "avatars", "icons"):
            return web.Response(body=TINY_PNG, content_type="image/png")
        return web.Response(status=404, text="404: Not Found")

    # ------------------------------------------------------------------ REST plumbing
    async def _read_body(self, request: web.Request) -> tuple[Any, list[UploadedFile]]:
        ctype = request.headers.get("Content-Type", "")
        files: list[UploadedFile] = []
        body: Any = None
        if ctype.startswith("multipart/"):
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                name = part.name or ""
                if name == "payload_json":
                    body = json.loads(await part.text())
                elif name.startswith("files[") or part.filename:
                    m = re.match(r"files\[(\d+)\]", name)
                    idx = int(m.group(1)) if m else len(files)
                    files.append(
                        UploadedFile(
                            idx,
                            part.filename or name,
                            bytes(await part.read()),
                            part.headers.get("Content-Type"),
                        )
                    )
                else:
                    body = body or {}
                    body[name] = await part.text()
        else:
            raw = await request.read()
            if raw:
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = raw.decode(errors="replace")
        return body, files

    def _fault_for(self, method: str, path: str) -> _Fault | None:
        for f in self._faults:
            if f.count > 0 and f.method in ("*", method) and f.regex.search(path):
                f.count -= 1
                return f
        return None

    def _fault_response(self, f: _Fault) -> tuple[int, Any, dict]:
        if f.status == 429:
            body = f.body or {
                "message": "You are being rate limited.",
                "retry_after": f.retry_after,
                "global": False,
            }
            headers = {
                "Via": "1.1 google",
                "Retry-After": str(max(1, math.ceil(f.retry_after))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + f.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{f.retry_after:.3f}",
                "X-RateLimit-Scope": "user",
            }
            return 429, body, headers
        default = {
            400: "400: Bad Request",
            401: "401: Unauthorized",
            403: "Missing Permissions",
            404: "404: Not Found",
        }.get(f.status, f"{f.status}: Server Error")
        body = f.body or {
            "message": default,
            "code": f.code if f.code is not None else (50013 if f.status == 403 else 0),
        }
        return f.status, body, {}

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        raw_path = request.rel_url.raw_path
        segs = raw_path.split("/")[3:]  # drop '', 'api', 'v10'
        path = "/" + "/".join(unquote(s) for s in segs)
        body, files = await self._read_body(request)
        loop = asyncio.get_running_loop()
        rec = Request(request.method, path, dict(request.query), body, files, loop.time())
        self.requests.append(rec)
        fault = self._fault_for(request.method, path)
        if fault is not None:
            status, out, headers = self._fault_response(fault)
            rec.status, rec.response = status, out
            self._note_interaction_request(path, rec)
            return _json(status, out, headers)
        status, out = 404, {"message": "404: Not Found", "code": 0}
        for method, rx, handler in self._routes():
            if method != request.method:
                continue
            m = rx.fullmatch(path)
            if m is None:
                continue
            try:
                status, out = await handler(rec, *m.groups())
            except ApiError as e:
                status, out = e.status, e.body()
            break
        else:
            self.unknown_routes.append(rec)
            log.warning("fakediscord: unknown route %s %s", request.method, path)
        rec.status, rec.response = status, out
        self._note_interaction_request(path, rec)
        return _json(status, out)

    def _note_interaction_request(self, path: str, rec: Request) -> None:
        m = re.match(r"/(?:interactions/\d+|webhooks/\d+)/([^/]+)", path)
        if m:
            for i in self.interactions:
                if i.token == m.group(1):
                    i.requests.append(rec)

    def _routes(self) -> list[tuple[str, re.Pattern, Callable]]:
        if not hasattr(self, "_route_table"):
            S = r"(\d+)"
            table = [
                ("GET", r"/users/@me", self._r_me),
                ("GET", rf"/users/{S}", self._r_user),
                ("GET", r"/(?:oauth2/)?applications/@me", self._r_app),
                ("GET", r"/gateway(?:/bot)?", self._r_gateway),
                ("GET", rf"/applications/{S}/commands", self._r_get_commands),
                ("PUT", rf"/applications/{S}/commands", self._r_put_commands),
                ("POST", rf"/applications/{S}/commands", self._r_post_command),
                ("GET", rf"/applications/{S}/guilds/{S}/commands", self._r_get_commands),
                ("PUT", rf"/applications/{S}/guilds/{S}/commands", self._r_put_commands),
                ("POST", rf"/applications/{S}/guilds/{S}/commands", self._r_post_command),
                ("DELETE", rf"/applications/{S}/(?:guilds/\d+/)?commands/{S}", self._r_delete_command),
                ("GET", rf"/applications/{S}/emojis", self._r_empty_items),
                ("GET", rf"/applications/{S}/entitlements", self._r_empty_list),
                ("POST", rf"/interactions/{S}/([^/]+)/callback", self._r_callback),
                ("POST", rf"/webhooks/{S}/([^/]+)", self._r_webhook_execute),
                ("GET", rf"/webhooks/{S}/([^/]+)/messages/(@original|\d+)", self._r_webhook_get),
                ("PATCH", rf"/webhooks/{S}/([^/]+)/messages/(@original|\d+)", self._r_webhook_edit),
                ("DELETE", rf"/webhooks/{S}/([^/]+)/messages/(@original|\d+)", self._r_webhook_delete),
                ("GET", rf"/guilds/{S}", self._r_guild),
                ("GET", rf"/guilds/{S}/channels", self._r_guild_channels),
                ("GET", rf"/guilds/{S}/roles", self._r_guild_roles),
                ("GET", rf"/guilds/{S}/members/{S}", self._r_guild_member),
                ("GET", rf"/guilds/{S}/threads/active", self._r_active_threads),
                ("GET", rf"/channels/{S}", self._r_get_channel),
                ("PATCH", rf"/channels/{S}", self._r_edit_channel),
                ("DELETE", rf"/channels/{S}", self._r_delete_channel),
                ("POST", rf"/channels/{S}/typing", self._r_typing),
                ("GET", rf"/channels/{S}/messages", self._r_history),
                ("POST", rf"/channels/{S}/messages", self._r_send),
                ("GET", rf"/channels/{S}/messages/{S}", self._r_get_message),
                ("PATCH", rf"/channels/{S}/messages/{S}", self._r_edit_message),
                ("DELETE", rf"/channels/{S}/messages/{S}", self._r_delete_message),
                ("POST", rf"/channels/{S}/messages/{S}/threads", self._r_thread_from_message),
                ("POST", rf"/channels/{S}/threads", self._r_thread_without_message),
                ("PUT", rf"/channels/{S}/thread-members/(@me|\d+)", self._r_no_content),
                ("DELETE", rf"/channels/{S}/thread-members/(@me|\d+)", self._r_no_content),
                ("GET", rf"/channels/{S}/(?:messages/)?pins", self._r_empty_list),
                ("PUT", rf"/channels/{S}/messages/{S}/reactions/([^/]+)/@me", self._r_add_reaction),
                (
                    "DELETE",
                    rf"/channels/{S}/messages/{S}/reactions/([^/]+)/(@me|\d+)",
                    self._r_remove_reaction,
                ),
                ("GET", rf"/channels/{S}/messages/{S}/reactions/([^/]+)", self._r_reaction_users),
                ("DELETE", rf"/channels/{S}/messages/{S}/reactions(?:/([^/]+))?", self._r_clear_reactions),
            ]
            self._route_table = [(m, re.compile(p), h) for m, p, h in table]
        return self._route_table

    # ------------------------------------------------------------------ REST: identity / app / guild
    async def _r_me(self, rec: Request):
        return 200, {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0}

    async def _r_user(self, rec: Request, uid: str):
        u = self.users.get(int(uid))
        if u is None:
            raise ApiError(404, 10013, "Unknown User")
        return 200, u.payload()

    async def _r_app(self, rec: Request):
        return 200, {
            "id": str(self.app_id),
            "name": self.bot_user.name,
            "icon": None,
            "description": "fake",
            "summary": "",
            "type": None,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": "0" * 64,
            "flags": 1 << 19,  # GATEWAY_MESSAGE_CONTENT_LIMITED
            "owner": self.owner.payload(),
            "team": None,
            "bot": self.bot_user.payload(),
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "approximate_guild_count": 1,
        }

    async def _r_gateway(self, rec: Request):
        return 200, {
            "url": self.gateway_url.rstrip("/"),
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1},
        }

    async def _r_empty_items(self, rec: Request, *a: str):
        return 200, {"items": []}

    async def _r_empty_list(self, rec: Request, *a: str):
        return 200, []

    async def _r_no_content(self, rec: Request, *a: str):
        return 204, None

    async def _r_guild(self, rec: Request, gid: str):
        self._check_guild(gid)
        return 200, self.guild_payload(full=False)

    async def _r_guild_channels(self, rec: Request, gid: str):
        self._check_guild(gid)
        return 200, [c.payload() for c in self.channels.values() if not c.is_thread and not c.deleted]

    async def _r_guild_roles(self, rec: Request, gid: str):
        self._check_guild(gid)
        return 200, [r.payload() for r in self.roles.values()]

    async def _r_guild_member(self, rec: Request, gid: str, uid: str):
        self._check_guild(gid)
        u = self.users.get(int(uid))
        if u is None:
            raise ApiError(404, 10007, "Unknown Member")
        return 200, u.member_payload()

    async def _r_active_threads(self, rec: Request, gid: str):
        self._check_guild(gid)
        ts = [c for c in self.channels.values() if c.is_thread and not c.deleted and not c.archived]
        return 200, {"threads": [t.payload() for t in ts], "members": []}

    def _check_guild(self, gid: str) -> None:
        if int(gid) != self.guild_id:
            raise ApiError(404, 10004, "Unknown Guild")

    # ------------------------------------------------------------------ REST: application commands
    def _command_scope(self, gid: str | None) -> int | None:
        return int(gid) if gid else None

    def _materialize_command(self, c: dict, scope: int | None, old: list[dict]) -> dict:
        prev = next((o for o in old if o["name"] == c["name"] and o.get("type", 1) == c.get("type", 1)), None)
        out = {
            "id": prev["id"] if prev else str(self.sf.next()),
            "application_id": str(self.app_id),
            "version": str(self.sf.next()),
            "type": c.get("type", 1),
            "name": c["name"],
            "description": c.get("description", ""),
            "options": c.get("options", []),
            "default_member_permissions": c.get("default_member_permissions"),
            "dm_permission": c.get("dm_permission", True),
            "nsfw": c.get("nsfw", False),
            "contexts": c.get("contexts"),
            "integration_types": c.get("integration_types", [0]),
            "name_localizations": c.get("name_localizations"),
            "description_localizations": c.get("description_localizations"),
        }
        if scope is not None:
            out["guild_id"] = str(scope)
        return out

    async def _r_get_commands(self, rec: Request, app: str, gid: str | None = None):
        return 200, self.commands.get(self._command_scope(gid), [])

    async def _r_put_commands(self, rec: Request, app: str, gid: str | None = None):
        scope = self._command_scope(gid)
        body = rec.json or []
        self.command_syncs.append((scope, body))
        old = self.commands.get(scope, [])
        names = [(c["name"], c.get("type", 1)) for c in body]
        if len(set(names)) != len(names):
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {"_errors": [{"code": "APPLICATION_COMMANDS_DUPLICATE_NAME"}]},
            )
        self.commands[scope] = [self._materialize_command(c, scope, old) for c in body]
        return 200, self.commands[scope]

    async def _r_post_command(self, rec: Request, app: str, gid: str | None = None):
        scope = self._command_scope(gid)
        old = self.commands.setdefault(scope, [])
        c = self._materialize_command(rec.json, scope, old)
        self.commands[scope] = [o for o in old if o["name"] != c["name"]] + [c]
        return 201, c

    async def _r_delete_command(self, rec: Request, app: str, cid: str):
        for scope, cmds in self.commands.items():
            self.commands[scope] = [c for c in cmds if c["id"] != cid]
        return 204, None

    def find_command(self, name: str, type: int = 1) -> tuple[dict | None, int | None]:
        """(registered command, guild id or None for global) — guild commands win, like Discord."""
        for scope in (self.guild_id, None):
            for c in self.commands.get(scope, []):
                if c["name"] == name and c.get("type", 1) == type:
                    return c, scope
        return None, None

    # ------------------------------------------------------------------ REST: channels & messages
    def _live_channel(self, cid: str | int) -> Channel:
        ch = self.channels.get(int(cid))
        if ch is None or ch.deleted:
            raise unknown_channel()
        return ch

    def _live_message(self, ch: Channel, mid: str | int) -> Message:
        m = self.messages.get(int(mid))
        if m is None or m.deleted or m.channel_id != ch.id:
            raise unknown_message()
        return m

    async def _r_get_channel(self, rec: Request, cid: str):
        ch = self._live_channel(cid)
        return 200, ch.payload(self.bot_user.id if ch.is_thread else None)

    async def _r_edit_channel(self, rec: Request, cid: str):
        ch = self._live_channel(cid)
        body = rec.json or {}
        for key in ("name", "topic", "archived", "locked", "auto_archive_duration"):
            if key in body and body[key] is not None:
                setattr(ch, key, body[key])
        await self._dispatch_if_ready(
            "THREAD_UPDATE" if ch.is_thread else "CHANNEL_UPDATE", ch.payload(), I_GUILDS
        )
        return 200, ch.payload()

    async def _r_delete_channel(self, rec: Request, cid: str):
        ch = self._live_channel(cid)
        payload = ch.payload()
        await self.delete_channel(ch)
        return 200, payload

    async def _r_typing(self, rec: Request, cid: str):
        self._live_channel(cid)
        self.typing.append(int(cid))
        return 204, None

    async def _r_history(self, rec: Request, cid: str):
        ch = self._live_channel(cid)
        self._require(ch, "view_channel", "read_message_history")
        q = rec.query
        ms = sorted(self.messages_in(ch), key=lambda m: m.id, reverse=True)
        if "before" in q:
            ms = [m for m in ms if m.id < int(q["before"])]
        if "after" in q:
            ms = [m for m in ms if m.id > int(q["after"])]
        if "around" in q:
            a = int(q["around"])
            ms = sorted(ms, key=lambda m: abs(m.id - a))
        limit = int(q.get("limit", 50))
        return 200, [self.message_payload(m) for m in ms[:limit]]

    async def _r_get_message(self, rec: Request, cid: str, mid: str):
        ch = self._live_channel(cid)
        return 200, self.message_payload(self._live_message(ch, mid))

    def _validate_message_body(self, body: dict, files: list[UploadedFile], *, editing: bool = False) -> None:
        content = body.get("content") or ""
        if len(content) > 2000:
            raise ApiError(
                400,
                50035,
                "Invalid Form Body",
                {
                    "content": {
                        "_errors": [
                            {"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}
                        ]
                    }
                },
            )
        if len(body.get("embeds") or []) > 10:
            raise ApiError(400, 50035, "Invalid Form Body")
        if sum(len(f.data) for f in files) > self.attachment_size_limit:
            raise ApiError(413, 40005, "Request entity too large")
        if not editing and not (
            content or body.get("embeds") or files or body.get("components") or body.get("sticker_ids")
        ):
            raise ApiError(400, 50006, "Cannot send an empty message")

    def _new_attachments(
        self, cid: int, body: dict, files: list[UploadedFile], keep: list[Attachment]
    ) -> list[Attachment]:
        by_index = {f.index: f for f in files}
        out: list[Attachment] = []
        listed = body.get("attachments")
        if listed is None:
            return keep + [self._store_attachment(cid, f.filename, f.data, f.content_type) for f in files]
        keep_by_id = {a.id: a for a in keep}
        used = set()
        for entry in listed:
            aid = int(entry.get("id", -1))
            if aid in keep_by_id:
                out.append(keep_by_id[aid])
            elif aid in by_index:
                f = by_index[aid]
                used.add(aid)
                out.append(
                    self._store_attachment(
                        cid,
                        entry.get("filename") or f.filename,
                        f.data,
                        f.content_type,
                        entry.get("description"),
                    )
                )
        for idx, f in by_index.items():  # files not described in 'attachments' are still uploaded
            if idx not in used:
                out.append(self._store_attachment(cid, f.filename, f.data, f.content_type))
        return out

    def _mentions_in(self, content: str) -> list[User]:
        ids = [int(x) for x in re.findall(r"<@!?(\d+)>", content or "")]
        return [self.users[i] for i in dict.fromkeys(ids) if i in self.users]

    async def _create_message(
        self,
        ch: Channel,
        author: User,
        body: dict,
        files: list[UploadedFile],
        *,
        webhook: bool = False,
        interaction: Interaction | None = None,
        flags: int = 0,
        mentions: list[User] | None = None,
    ) -> Message:
        ref = body.get("message_reference")
        if ref:
            target = self.messages.get(int(ref.get("message_id", 0)))
            if (target is None or target.deleted) and ref.get("fail_if_not_exists", True):
                raise ApiError(
                    400,
                    50035,
                    "Invalid Form Body",
                    {
                        "message_reference": {
                            "_errors": [
                                {"code": "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "message": "Unknown message"}
                            ]
                        }
                    },
                )
            ref = {
                "type": ref.get("type", 0),
                "message_id": str(ref["message_id"]),
                "channel_id": str(ref.get("channel_id") or ch.id),
                "guild_id": str(self.guild_id),
            }
        content = body.get("content") or ""
        m = Message(
            self.sf.next(),
            ch.id,
            self.guild_id,
            author,
            content=content,
            attachments=self._new_attachments(ch.id, body, files, []),
            embeds=body.get("embeds") or [],
            components=body.get("components") or [],
            message_reference=ref or None,
            mentions=mentions if mentions is not None else self._mentions_in(content),
            flags=(int(body.get("flags") or 0) & ~(1 << 12)) | flags,  # drop SUPPRESS_NOTIFICATIONS
            type=19 if ref else (20 if interaction is not None and not webhook else 0),
            webhook_id=self.app_id if (webhook or interaction is not None) else None,
            interaction_id=interaction.id if interaction else None,
            tts=bool(body.get("tts")),
        )
        self.messages[m.id] = m
        ch.last_message_id = m.id
        if ch.is_thread:
            ch.message_count += 1
        if not m.ephemeral:
            await self._dispatch_if_ready("MESSAGE_CREATE", self.message_payload(m, gateway=True), I_MESSAGES)
        return m

    async def _edit_message(self, m: Message, body: dict, files: list[UploadedFile]) -> Message:
        self._validate_message_body(body, files, editing=True)
        if "content" in body:
            m.content = body["content"] or ""
            m.mentions = self._mentions_in(m.content)
        if "embeds" in body:
            m.embeds = body["embeds"] or []
        if "components" in body:
            m.components = body["components"] or []
        if "flags" in body and body["flags"] is not None:
            m.flags = (m.flags & (Message.EPHEMERAL)) | int(body["flags"])
        if "attachments" in body or files:
            m.attachments = self._new_attachments(m.channel_id, body, files, m.attachments)
        m.flags &= ~Message.LOADING
        m.edited_at = now()
        if not m.ephemeral:
            await self._dispatch_if_ready("MESSAGE_UPDATE", self.message_payload(m, gateway=True), I_MESSAGES)
        return m

    async def _r_send(self, rec: Request, cid: str):
        ch = self._live_channel(cid)
        body = rec.json if isinstance(rec.json, dict) else {}
        if ch.is_thread:
            self._require(ch, "view_channel", "send_messages_in_threads")
            if ch.locked:
                raise ApiError(403, 50083, "Thread is locked")
            if ch.archived:  # sending un-archives, like Discord
                ch.archived = False
                await self._dispatch_if_ready("THREAD_UPDATE", ch.payload(), I_GUILDS)
        else:
            self._require(ch, "view_channel", "send_messages")
        if rec.files:
            self._require(ch, "attach_files")
        self._validate_message_body(body, rec.files)
        m = await self._create_message(ch, self.bot_user, body, rec.files)
        return 200, self.message_payload(m)

    async def _r_edit_message(self, rec: Request, cid: str, mid: str):
        ch = self._live_channel(cid)
        m = self._live_message(ch, mid)
        if m.author.id != self.bot_user.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        await self._edit_message(m, rec.json if isinstance(rec.json, dict) else {}, rec.files)
        return 200, self.message_payload(m)

    async def _r_delete_message(self, rec: Request, cid: str, mid: str):
        ch = self._live_channel(cid)
        m = self._live_message(ch, mid)
        if m.author.id != self.bot_user.id:
            self._require(ch, "manage_messages")
        await self.delete_message(m)
        return 204, None

    # ------------------------------------------------------------------ REST: threads
    def _check_thread_allowed(self, ch: Channel, private: bool = False) -> None:
        if ch.is_thread:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        if ch.id in self._denied_thread_channels:
            raise missing_permissions()
        self._require(ch, "view_channel", "create_private_threads" if private else "create_public_threads")

    async def _new_thread(self, parent: Channel, body: dict, tid: int, ttype: int) -> Channel:
        name = (body.get("name") or "thread")[:100]
        th = Channel(
            tid,
            self.guild_id,
            name,
            ttype,
            parent_id=parent.id,
            owner_id=self.bot_user.id,
            auto_archive_duration=int(body.get("auto_archive_duration") or 1440),
        )
        self.channels[th.id] = th
        await self._dispatch_if_ready(
            "THREAD_CREATE", {**th.payload(self.bot_user.id), "newly_created": True}, I_GUILDS
        )
        return th

    async def _r_thread_from_message(self, rec: Request, cid: str, mid: str):
        ch = self._live_channel(cid)
        self._check_thread_allowed(ch)
        m = self._live_message(ch, mid)
        if m.thread_id:
            raise ApiError(400, 160004, "A thread has already been created for this message")
        th = await self._new_thread(ch, rec.json or {}, m.id, 11)  # Discord: thread id == starter message id
        th.starter_message_id = m.id
        m.thread_id = th.id
        await self._dispatch_if_ready("MESSAGE_UPDATE", self.message_payload(m, gateway=True), I_MESSAGES)
        return 201, th.payload(self.bot_user.id)

    async def _r_thread_without_message(self, rec: Request, cid: str):
        ch = self._live_channel(cid)
        body = rec.json or {}
        if "message" in body:
            raise ApiError(400, 50024, "Cannot execute action on this channel type (forum posts unsupported)")
        ttype = int(body.get("type") or 12)
        self._check_thread_allowed(ch, private=ttype == 12)
        th = await self._new_thread(ch, body, self.sf.next(), ttype)
        return 201, th.payload(self.bot_user.id)

    # ------------------------------------------------------------------ REST: reactions
    async def _r_add_reaction(self, rec: Request, cid: str, mid: str, emoji: str):
        ch = self._live_channel(cid)
        self._require(ch, "view_channel", "read_message_history")
        m = self._live_message(ch, mid)
        users = m.reactions.setdefault(emoji, [])
        if not users:
            self._require(ch, "add_reactions")
        if self.bot_user.id not in users:
            users.append(self.bot_user.id)
            await self._dispatch_reaction("MESSAGE_REACTION_ADD", self.bot_user, m, emoji)
        return 204, None

    async def _r_remove_reaction(self, rec: Request, cid: str, mid: str, emoji: str, who: str):
        ch = self._live_channel(cid)
        m = self._live_message(ch, mid)
        uid = self.bot_user.id if who == "@me" else int(who)
        if uid != self.bot_user.id:
            self._require(ch, "manage_messages")
        users = m.reactions.get(emoji, [])
        if uid in users:
            users.remove(uid)
            await self._dispatch_reaction("MESSAGE_REACTION_REMOVE", self.users[uid], m, emoji)
        return 204, None

    async def _r_reaction_users(self, rec: Request, cid: str, mid: str, emoji: str):
        ch = self._live_channel(cid)
        m = self._live_message(ch, mid)
        return 200, [self.users[u].payload() for u in m.reactions.get(emoji, []) if u in self.users]

    async def _r_clear_reactions(self, rec: Request, cid: str, mid: str, emoji: str | None = None):
        ch = self._live_channel(cid)
        self._require(ch, "manage_messages")
        m = self._live_message(ch, mid)
        if emoji is None:
            m.reactions.clear()
        else:
            m.reactions.pop(emoji, None)
        return 204, None

    async def _dispatch_reaction(self, t: str, user: User, m: Message, emoji: str) -> None:
        d: dict[str, Any] = {
            "user_id": str(user.id),
            "channel_id": str(m.channel_id),
            "message_id": str(m.id),
            "guild_id": str(self.guild_id),
            "emoji": self._emoji_payload(emoji),
            "burst": False,
            "type": 0,
        }
        if t == "MESSAGE_REACTION_ADD":
            d["member"] = user.member_payload()
            d["message_author_id"] = str(m.author.id)
            d["burst_colors"] = []
        await self._dispatch_if_ready(t, d, I_REACTIONS)

    # ------------------------------------------------------------------ REST: interactions & webhooks
    def _interaction_by_token(self, app: str, token: str) -> Interaction:
        inter = next((i for i in self.interactions if i.token == token), None)
        if inter is None or int(app) != self.app_id:
            raise invalid_webhook_token()
        loop = asyncio.get_running_loop()
        if inter.expired or loop.time() - inter.dispatched_at > self.token_ttl:
            raise invalid_webhook_token()
        if not inter.responses:
            raise ApiError(404, 10015, "Unknown Webhook")  # followup before the interaction was acknowledged
        return inter

    async def _r_callback(self, rec: Request, iid: str, token: str):
        inter = next((i for i in self.interactions if i.id == int(iid)), None)
        loop = asyncio.get_running_loop()
        if inter is None or inter.token != token or inter.expired:
            raise ApiError(404, 10062, "Unknown interaction")
        if inter.responses:
            raise ApiError(400, 40060, "Interaction has already been acknowledged.")
        if loop.time() - inter.dispatched_at > self.interaction_timeout:
            raise ApiError(404, 10062, "Unknown interaction")
        body = rec.json if isinstance(rec.json, dict) else {}
        ctype, data = int(body.get("type", 0)), body.get("data") or {}
        ch = self.channels.get(inter.channel_id)
        resource: dict[str, Any] | None = None
        if ctype in (4, 5):
            if ctype == 4:
                self._validate_message_body(data, rec.files)
            flags = Message.LOADING if ctype == 5 else 0
            flags |= int(data.get("flags") or 0) & Message.EPHEMERAL
            inter.responses.append(Callback(ctype, data, rec.files, loop.time()))
            msg = await self._create_message(
                ch, self.bot_user, {**data, "flags": 0}, rec.files, interaction=inter, flags=flags
            )
            inter.original = msg
            resource = {"type": ctype, "message": self.message_payload(msg)}
        elif ctype == 7:
            inter.responses.append(Callback(ctype, data, rec.files, loop.time()))
            target = self.messages.get(int(inter.payload.get("message", {}).get("id", 0)))
            if target is not None:
                await self._edit_message(target, data, rec.files)
                resource = {"type": ctype, "message": self.message_payload(target)}
        else:  # 1 pong, 6 deferred update, 8 autocomplete, 9 modal
            inter.responses.append(Callback(ctype, data, rec.files, loop.time()))
            if ctype == 9:
                inter.modal = data
        resp: dict[str, Any] = {
            "interaction": {
                "id": str(inter.id),
                "type": inter.type,
                "response_message_loading": ctype == 5,
                "response_message_ephemeral": bool(inter.original and inter.original.ephemeral),
            }
        }
        if inter.original is not None and ctype in (4, 5):
            resp["interaction"]["response_message_id"] = str(inter.original.id)
        if resource is not None:
            resp["resource"] = resource
        if rec.query.get("with_response") in ("1", "true", "True"):
            return 200, resp
        return 204, None

    def _webhook_message(self, inter: Interaction, which: str) -> Message:
        m = inter.original if which == "@original" else self.messages.get(int(which))
        if m is None or m.deleted or (m is not inter.original and m not in inter.followups):
            raise unknown_message()
        return m

    async def _r_webhook_execute(self, rec: Request, app: str, token: str):
        inter = self._interaction_by_token(app, token)
        body = rec.json if isinstance(rec.json, dict) else {}
        self._validate_message_body(body, rec.files)
        orig = inter.original
        if orig is not None and orig.loading and not orig.deleted:
            # Discord: the first followup after a deferred (type 5) response fills in the "thinking" message
            m = await self._edit_message(orig, {"attachments": [], **body}, rec.files)
        else:
            ch = self.channels.get(int(rec.query.get("thread_id") or inter.channel_id))
            if ch is None or ch.deleted:
                raise unknown_channel()
            flags = int(body.get("flags") or 0) & Message.EPHEMERAL
            m = await self._create_message(
                ch,
                self.bot_user,
                {**body, "flags": 0},
                rec.files,
                webhook=True,
                interaction=inter,
                flags=flags,
            )
        inter.followups.append(m)
        if rec.query.get("wait") in ("1", "true", "True"):
            return 200, self.message_payload(m)
        return 204, None

    async def _r_webhook_get(self, rec: Request, app: str, token: str, which: str):
        inter = self._interaction_by_token(app, token)
        return 200, self.message_payload(self._webhook_message(inter, which))

    async def _r_webhook_edit(self, rec: Request, app: str, token: str, which: str):
        inter = self._interaction_by_token(app, token)
        m = self._webhook_message(inter, which)
        await self._edit_message(m, rec.json if isinstance(rec.json, dict) else {}, rec.files)
        return 200, self.message_payload(m)

    async def _r_webhook_delete(self, rec: Request, app: str, token: str, which: str):
        inter = self._interaction_by_token(app, token)
        m = self._webhook_message(inter, which)
        await self.delete_message(m)
        return 204, None

    # ------------------------------------------------------------------ test-side actions (users)
    def _interaction_payload(
        self, itype: int, user: User, ch: Channel, data: dict | None, message: Message | None
    ) -> tuple[int, str, dict]:
        iid, token = self.sf.next(), "itok." + secrets.token_urlsafe(32)
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.app_id),
            "type": itype,
            "guild_id": str(self.guild_id),
            "guild": {"id": str(self.guild_id), "locale": "en-US", "features": []},
            "channel_id": str(ch.id),
            "channel": ch.payload(),
            "member": self.member_payload(user, ch),
            "token": token,
            "version": 1,
            "app_permissions": str(self.permissions_for(self.bot_user, ch)),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "context": 0,
            "attachment_size_limit": self.attachment_size_limit,
        }
        if data is not None:
            payload["data"] = data
        if message is not None:
            payload["message"] = self.message_payload(message, full_content=True)
        return iid, token, payload

    async def _send_interaction(
        self,
        itype: int,
        user: User,
        channel: Channel | int,
        data: dict | None,
        message: Message | None = None,
    ) -> Interaction:
        ch = self._channel(channel)
        iid, token, payload = self._interaction_payload(itype, user, ch, data, message)
        inter = Interaction(iid, token, itype, payload, user, ch.id, asyncio.get_running_loop().time(), self)
        self.interactions.append(inter)
        await self.dispatch("INTERACTION_CREATE", payload)
        return inter

    @staticmethod
    def _option_type(value: Any, schema_type: int | None) -> int:
        if schema_type is not None:
            return schema_type
        if isinstance(value, bool):
            return 5
        if isinstance(value, int):
            return 4
        if isinstance(value, float):
            return 10
        if isinstance(value, User):
            return 6
        if isinstance(value, Channel):
            return 7
        if isinstance(value, Role):
            return 8
        return 3

    async def slash(
        self,
        user: User,
        channel: Channel | int,
        name: str,
        options: dict[str, Any] | None = None,
        attachments: dict[str, tuple[str, bytes, str | None]] | None = None,
        attachment_urls: dict[str, str] | None = None,
    ) -> Interaction:
        """Dispatch a chat-input command. ``name`` may be "cmd", "cmd sub" or "cmd group sub".
        Option types come from the synced command schema when there is one, else from the Python type.
        ``attachment_urls`` puts another URL in an attachment's payload (a forged or hostile one)."""
        ch = self._channel(channel)
        parts = name.split()
        cmd, scope = self.find_command(parts[0], 1)
        schema = (cmd or {}).get("options", [])
        for p in parts[1:]:
            schema = next((o.get("options", []) for o in schema if o["name"] == p), [])
        stypes = {o["name"]: o.get("type") for o in schema}
        resolved: dict[str, dict] = {}
        opts: list[dict] = []
        for k, v in (options or {}).items():
            t = self._option_type(v, stypes.get(k))
            value = v
            if isinstance(v, User):
                value = str(v.id)
                resolved.setdefault("users", {})[value] = v.payload()
                resolved.setdefault("members", {})[value] = {
                    **v.member_payload(False),
                    "permissions": str(self.permissions_for(v, ch)),
                }
            elif isinstance(v, Channel):
                value = str(v.id)
                resolved.setdefault("channels", {})[value] = {
                    **v.payload(),
                    "permissions": str(self.permissions_for(user, v)),
                }
            elif isinstance(v, Role):
                value = str(v.id)
                resolved.setdefault("roles", {})[value] = v.payload()
            elif t == 10 and isinstance(v, int):
                value = v
            opts.append({"name": k, "type": t, "value": value})
        for k, (filename, data, ctype) in (attachments or {}).items():
            a = self._store_attachment(ch.id, filename, data, ctype)
            a.ephemeral = True
            a.url = (attachment_urls or {}).get(k) or a.url.replace("/attachments/", "/ephemeral-attachments/")
            opts.append({"name": k, "type": 11, "value": str(a.id)})
            resolved.setdefault("attachments", {})[str(a.id)] = a.payload()
        for depth, p in reversed(list(enumerate(parts[1:], start=1))):
            is_group = depth < len(parts) - 1
            opts = [{"name": p, "type": 2 if is_group else 1, "options": opts}]
        data: dict[str, Any] = {"id": cmd["id"] if cmd else str(self.sf.next()), "name": parts[0], "type": 1}
        if opts:
            data["options"] = opts
        if resolved:
            data["resolved"] = resolved
        if scope is not None:
            data["guild_id"] = str(scope)
        return await self._send_interaction(2, user, ch, data)

    async def context_menu(
        self, user: User, channel: Channel | int, target_message: Message, name: str
    ) -> Interaction:
        """Dispatch a message context-menu command (data.type 3) on ``target_message``."""
        cmd, scope = self.find_command(name, 3)
        data: dict[str, Any] = {
            "id": cmd["id"] if cmd else str(self.sf.next()),
            "name": name,
            "type": 3,
            "target_id": str(target_message.id),
            "resolved": {
                "messages": {str(target_message.id): self.message_payload(target_message, full_content=True)}
            },
        }
        if scope is not None:
            data["guild_id"] = str(scope)
        return await self._send_interaction(2, user, channel, data)

    async def modal_submit(
        self,
        user: User,
        channel: Channel | int,
        custom_id: str,
        values: dict[str, str],
        message: Message | None = None,
    ) -> Interaction:
        """Dispatch a modal submit (type 5); each text input is an action row with one type-4 component."""
        comps = [
            {"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in values.items()
        ]
        return await self._send_interaction(
            5, user, channel, {"custom_id": custom_id, "components": comps}, message
        )

    async def button_click(
        self, user: User, message: Message, custom_id: str, component_type: int = 2
    ) -> Interaction:
        """Dispatch a component interaction (type 3) on one of the bot's messages."""
        data = {"custom_id": custom_id, "component_type": component_type}
        return await self._send_interaction(3, user, message.channel_id, data, message)

    async def user_message(
        self,
        user: User,
        channel: Channel | int,
        content: str = "",
        attachments: list[tuple[str, bytes, str | None]] | None = None,
        reply_to: Message | int | None = None,
        mentions: list[User] | None = None,
    ) -> Message:
        """A user posts a message (stored, MESSAGE_CREATE dispatched). ``mentions`` adds to <@id> found in content."""
        ch = self._channel(channel)
        body: dict[str, Any] = {"content": content}
        if reply_to is not None:
            rid = reply_to if isinstance(reply_to, int) else reply_to.id
            body["message_reference"] = {"message_id": rid, "channel_id": self.messages[rid].channel_id}
        files = [UploadedFile(i, fn, data, ct) for i, (fn, data, ct) in enumerate(attachments or [])]
        ms = self._mentions_in(content)
        for u in mentions or []:
            if u not in ms:
                ms.append(u)
        return await self._create_message(ch, user, body, files, mentions=ms)

    async def edit_user_message(self, message: Message, content: str) -> Message:
        return await self._edit_message(message, {"content": content}, [])

    async def react(self, user: User, message: Message, emoji: str) -> None:
        """``user`` adds ``emoji`` ("🎨", or "name:id" for custom) to ``message`` (MESSAGE_REACTION_ADD)."""
        users = message.reactions.setdefault(emoji, [])
        if user.id not in users:
            users.append(user.id)
        await self._dispatch_reaction("MESSAGE_REACTION_ADD", user, message, emoji)

    async def unreact(self, user: User, message: Message, emoji: str) -> None:
        users = message.reactions.get(emoji, [])
        if user.id in users:
            users.remove(user.id)
        await self._dispatch_reaction("MESSAGE_REACTION_REMOVE", user, message, emoji)


def point_discord_at(target: FakeDiscord | str) -> Callable[[], None]:
    """Point discord.py's REST, gateway and CDN base URLs at the fake server. Returns an undo function.

    Webhook/interaction followups use discord.http.Route too, so Route.BASE covers them.
    """
    import discord
    import discord.asset
    import discord.gateway
    import discord.http

    api_base = target.api_base if isinstance(target, FakeDiscord) else target.rstrip("/")
    ws = api_base.replace("http://", "ws://", 1).replace("https://", "wss://", 1) + "/"
    old = (
        discord.http.Route.BASE,
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
        discord.asset.Asset.BASE,
    )
    discord.http.Route.BASE = f"{api_base}/api/v10"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(ws)
    discord.asset.Asset.BASE = api_base

    def undo() -> None:
        (
            discord.http.Route.BASE,
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY,
            discord.asset.Asset.BASE,
        ) = old

    return undo
