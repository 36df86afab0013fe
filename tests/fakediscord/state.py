"""The shared in-memory guild: users, roles, channels, threads, messages and attachments, and their payloads.

Every resource (gateway, REST, interactions, CDN, faults) is a mixin over :class:`State`, so they all read and
change one world. State names, as abstract methods, the few things a resource asks of another (dispatching a
gateway event, deleting a message or channel), so each module type-checks on its own.
"""

from __future__ import annotations

import abc
import asyncio
import re
from collections.abc import Callable, Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from .models import (
    ApiError,
    Attachment,
    Channel,
    Emoji,
    GatewayEvent,
    Guild,
    Message,
    Role,
    Snowflakes,
    UploadedFile,
    User,
    guess_content_type,
    image_size,
    iso,
    missing_permissions,
    now,
    unknown_channel,
    unknown_message,
)

if TYPE_CHECKING:
    from .interactions import Interaction

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


class State(abc.ABC):
    """A guild (``guild_id``), its bot user, an ``owner`` and a text channel "general"; lookups and payloads
    over them. ``add_guild`` adds more servers the bot is in, each with its own owner, roles and channels;
    every world-building call takes ``guild=`` (default: the first guild)."""

    # set by the faults resource, read by thread creation (REST)
    _denied_thread_channels: set[int]

    def __init__(self, *, guild_name: str = "Test Guild") -> None:
        self.sf = Snowflakes()
        self.message_content = True  # False: privileged message content intent is off
        self.attachment_size_limit = 10 * 1024 * 1024
        self.interactions: list[Interaction] = []
        self.port: int = 0

        self.app_id = self.sf.next()
        self.users: dict[int, User] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.guilds: dict[int, Guild] = {}
        self._attachments: dict[int, Attachment] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

        self.bot_user = User(self.app_id, "vqgan-bot", bot=True)
        self.users[self.bot_user.id] = self.bot_user
        self.guild = self._new_guild(guild_name)
        self.guild_id = self.guild.id
        self.guild_name = guild_name
        self.roles = self.guild.roles  # the first guild's (the same dict)
        self.bot_role = self.roles[self.bot_user.roles[0]]
        self.owner = self.users[self.guild.owner_id]
        self.channel = self.add_channel("general")

    def _new_guild(self, name: str) -> Guild:
        """A guild with @everyone, the bot (role "VQGAN Bot") and a new user "owner" as its owner."""
        g = Guild(self.sf.next(), name)
        g.roles[g.id] = Role(g.id, "@everyone", EVERYONE_PERMISSIONS, 0)
        bot_role = Role(self.sf.next(), "VQGAN Bot", BOT_PERMISSIONS, position=2, managed=True)
        g.roles[bot_role.id] = bot_role
        g.members.add(self.bot_user.id)
        self.bot_user.roles.append(bot_role.id)
        self.guilds[g.id] = g
        g.owner_id = self.add_user("owner", guild=g).id
        return g

    # ------------------------------------------------------------------ provided by the other resources
    @abc.abstractmethod
    async def dispatch(self, t: str, d: dict[str, Any], intent: int = 0) -> GatewayEvent:
        """Gateway: send a DISPATCH event to the bot session."""

    @abc.abstractmethod
    async def _dispatch_if_ready(self, t: str, d: dict[str, Any], intent: int = 0) -> None:
        """Gateway: dispatch only once a bot session exists."""

    @abc.abstractmethod
    def _bot_intents(self) -> int:
        """Gateway: the intents of the live bot session (all bits when there is none)."""

    @abc.abstractmethod
    async def delete_message(self, message: Message | int) -> None:
        """Faults: mark a message deleted, dispatch MESSAGE_DELETE."""

    @abc.abstractmethod
    async def delete_channel(self, channel: Channel | int) -> None:
        """Faults: mark a channel or thread deleted, dispatch CHANNEL_DELETE / THREAD_DELETE."""

    # ------------------------------------------------------------------ world building
    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _guild(self, guild: Guild | int | None) -> Guild:
        if guild is None:
            return self.guild
        return self.guilds[guild if isinstance(guild, int) else guild.id]

    def add_guild(self, name: str) -> Guild:
        """Another server the bot is in, with its own "owner" (``users[guild.owner_id]``) and channel
        "general" (``channels_of(guild)[0]``); GUILD_CREATE is dispatched to a running bot."""
        g = self._new_guild(name)
        self.add_channel("general", guild=g)
        self._spawn(self._dispatch_if_ready("GUILD_CREATE", self.guild_payload(guild=g), intent=I_GUILDS))
        return g

    def role(self, name: str, permissions: Any = 0, guild: Guild | int | None = None) -> Role:
        """Get the role called ``name`` in ``guild``; create it (with ``permissions``) if missing."""
        g = self._guild(guild)
        for r in g.roles.values():
            if r.name == name:
                return r
        r = Role(self.sf.next(), name, permission_bits(permissions), position=1)
        g.roles[r.id] = r
        self._spawn(
            self._dispatch_if_ready("GUILD_ROLE_CREATE", {"guild_id": str(g.id), "role": r.payload()})
        )
        return r

    def add_user(
        self, name: str, roles: Iterable[str | Role] = (), bot: bool = False, guild: Guild | int | None = None
    ) -> User:
        """A new user, a member of ``guild`` with these roles (names are that guild's roles)."""
        u = User(self.sf.next(), name, bot=bot)
        self.users[u.id] = u
        self.join(u, guild, roles)
        return u

    def join(self, user: User, guild: Guild | int | None = None, roles: Iterable[str | Role] = ()) -> None:
        """``user`` becomes a member of ``guild`` (too), with these roles of it (GUILD_MEMBER_ADD)."""
        g = self._guild(guild)
        user.roles += [r.id if isinstance(r, Role) else self.role(r, guild=g).id for r in roles]
        g.members.add(user.id)
        d = {**user.member_payload(guild=g), "guild_id": str(g.id)}
        self._spawn(self._dispatch_if_ready("GUILD_MEMBER_ADD", d, intent=I_MEMBERS))

    def add_channel(self, name: str, topic: str | None = None, guild: Guild | int | None = None) -> Channel:
        g = self._guild(guild)
        ch = Channel(self.sf.next(), g.id, name, 0, position=len(self.channels_of(g)), topic=topic)
        self.channels[ch.id] = ch
        self._spawn(self._dispatch_if_ready("CHANNEL_CREATE", ch.payload(), intent=I_GUILDS))
        return ch

    def add_emoji(self, name: str, animated: bool = False, guild: Guild | int | None = None) -> Emoji:
        """A custom emoji of ``guild``; ``str(emoji)`` (``<a:name:id>``) is how configs and messages name it."""
        g = self._guild(guild)
        e = Emoji(self.sf.next(), name, animated)
        g.emojis.append(e)
        d = {"guild_id": str(g.id), "emojis": [x.payload() for x in g.emojis]}
        self._spawn(self._dispatch_if_ready("GUILD_EMOJIS_UPDATE", d, intent=I_GUILDS))
        return e

    def channels_of(self, guild: Guild | int | None = None) -> list[Channel]:
        """A guild's text channels (no threads), oldest first."""
        gid = self._guild(guild).id
        return [c for c in self.channels.values() if c.guild_id == gid and not c.is_thread]

    def guild_of(self, channel: Channel | int) -> Guild:
        return self.guilds[self._channel(channel).guild_id]

    def _check_member(self, user: User, channel: Channel) -> None:
        """A test mistake, not a Discord error: only members act in a guild's channels."""
        if user.id not in self.guilds[channel.guild_id].members:
            raise ValueError(f"{user.name} is not a member of guild {channel.guild_id}: join() them first")

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
        g = self.guilds[ch.guild_id]
        if user.id == g.owner_id:
            return ALL_PERMISSIONS
        perms = g.everyone.permissions
        for rid in user.roles:
            if rid in g.roles:
                perms |= g.roles[rid].permissions
        if perms & ADMINISTRATOR:
            return ALL_PERMISSIONS
        ow = ch.overwrites
        if g.id in ow:
            perms = (perms & ~ow[g.id][2]) | ow[g.id][1]
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

    def _channel(self, channel: Channel | int) -> Channel:
        cid = channel if isinstance(channel, int) else channel.id
        ch = self.channels.get(cid)
        if ch is None:
            raise KeyError(f"unknown channel {cid}")
        return ch

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

    # ------------------------------------------------------------------ payloads
    def user_payload(self, u: User) -> dict[str, Any]:
        return u.payload()

    def member_payload(self, u: User, channel: Channel | None = None) -> dict[str, Any]:
        """``u`` as a member of the channel's guild (the first guild without a channel)."""
        d = u.member_payload(guild=self.guilds[channel.guild_id] if channel is not None else self.guild)
        if channel is not None:
            d["permissions"] = str(self.permissions_for(u, channel))
        return d

    def guild_payload(self, full: bool = True, guild: Guild | int | None = None) -> dict[str, Any]:
        g = self._guild(guild)
        d: dict[str, Any] = {
            "id": str(g.id),
            "name": g.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(g.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [r.payload() for r in g.roles.values()],
            "emojis": [e.payload() for e in g.emojis],
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
                member_count=len(g.members),
                members=[self.users[u].member_payload(guild=g) for u in g.members],
                channels=[c.payload() for c in self.channels_of(g) if not c.deleted],
                threads=[
                    c.payload(self.bot_user.id)
                    for c in self.channels.values()
                    if c.guild_id == g.id and c.is_thread and not c.deleted and not c.archived
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
        return self.message_content and bool(self._bot_intents() & I_CONTENT)

    def message_payload(
        self, m: Message, *, gateway: bool = False, full_content: bool = False, depth: int = 0
    ) -> dict[str, Any]:
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
            "mentions": [
                {**u.payload(), "member": u.member_payload(False, self.guilds.get(m.guild_id))} for u in m.mentions
            ],
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
                    "authorizing_integration_owners": {"0": str(m.guild_id)},
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
                d["member"] = m.author.member_payload(False, self.guilds.get(m.guild_id))
        return d

    @staticmethod
    def _emoji_payload(emoji: str) -> dict[str, Any]:
        e = emoji.strip("<>")
        if e.startswith("a:"):
            e = e[2:]
        if ":" in e:
            name, _, eid = e.partition(":")
            return {"id": eid, "name": name}
        return {"id": None, "name": emoji}

    # ------------------------------------------------------------------ the message store
    # (REST, interaction callbacks and users' actions all create and edit messages through it)
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

    def _validate_message_body(
        self, body: dict[str, Any], files: list[UploadedFile], *, editing: bool = False
    ) -> None:
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
        self, cid: int, body: dict[str, Any], files: list[UploadedFile], keep: list[Attachment]
    ) -> list[Attachment]:
        by_index = {f.index: f for f in files}
        out: list[Attachment] = []
        listed = body.get("attachments")
        if listed is None:
            return keep + [self._store_attachment(cid, f.filename, f.data, f.content_type) for f in files]
        keep_by_id = {a.id: a for a in keep}
        used: set[int] = set()
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
        body: dict[str, Any],
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
                "guild_id": str(ch.guild_id),
            }
        content = body.get("content") or ""
        m = Message(
            self.sf.next(),
            ch.id,
            ch.guild_id,
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

    async def _edit_message(self, m: Message, body: dict[str, Any], files: list[UploadedFile]) -> Message:
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
