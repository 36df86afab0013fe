"""REST resources a bot uses outside interactions: identity, guild, channels, messages, threads, reactions.

Also the test-side actions of users on messages (post, edit, react), which go through the same message store.
"""

from __future__ import annotations

from typing import Any

from .models import (
    ApiError,
    Channel,
    Guild,
    Message,
    Reply,
    Request,
    Route,
    UploadedFile,
    User,
    missing_permissions,
)
from .state import I_GUILDS, I_MESSAGES, I_REACTIONS, State


class Rest(State):
    """Handlers for /users, /applications/@me, /guilds and /channels (messages, threads, reactions)."""

    def __init__(self, **kwargs: Any) -> None:
        self.typing: list[int] = []  # channel ids the bot sent typing to
        super().__init__(**kwargs)

    def _rest_routes(self) -> list[Route]:
        S = r"(\d+)"
        return [
            ("GET", r"/users/@me", self._r_me),
            ("GET", rf"/users/{S}", self._r_user),
            ("GET", r"/(?:oauth2/)?applications/@me", self._r_app),
            ("GET", rf"/applications/{S}/emojis", self._r_empty_items),
            ("GET", rf"/applications/{S}/entitlements", self._r_empty_list),
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

    # ------------------------------------------------------------------ identity / app / guild

    async def _r_me(self, rec: Request) -> Reply:
        return 200, {**self.bot_user.payload(), "verified": True, "mfa_enabled": False, "flags": 0}

    async def _r_user(self, rec: Request, uid: str) -> Reply:
        u = self.users.get(int(uid))
        if u is None:
            raise ApiError(404, 10013, "Unknown User")
        return 200, u.payload()

    async def _r_app(self, rec: Request) -> Reply:
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
            "approximate_guild_count": len(self.guilds),
        }

    async def _r_empty_items(self, rec: Request, *a: str) -> Reply:
        return 200, {"items": []}

    async def _r_empty_list(self, rec: Request, *a: str) -> Reply:
        return 200, []

    async def _r_no_content(self, rec: Request, *a: str) -> Reply:
        return 204, None

    async def _r_guild(self, rec: Request, gid: str) -> Reply:
        return 200, self.guild_payload(full=False, guild=self._check_guild(gid))

    async def _r_guild_channels(self, rec: Request, gid: str) -> Reply:
        return 200, [c.payload() for c in self.channels_of(self._check_guild(gid)) if not c.deleted]

    async def _r_guild_roles(self, rec: Request, gid: str) -> Reply:
        return 200, [r.payload() for r in self._check_guild(gid).roles.values()]

    async def _r_guild_member(self, rec: Request, gid: str, uid: str) -> Reply:
        g = self._check_guild(gid)
        u = self.users.get(int(uid))
        if u is None or u.id not in g.members:
            raise ApiError(404, 10007, "Unknown Member")
        return 200, u.member_payload(guild=g)

    async def _r_active_threads(self, rec: Request, gid: str) -> Reply:
        g = self._check_guild(gid)
        ts = [c for c in self.channels.values()
              if c.guild_id == g.id and c.is_thread and not c.deleted and not c.archived]
        return 200, {"threads": [t.payload() for t in ts], "members": []}

    def _check_guild(self, gid: str) -> Guild:
        g = self.guilds.get(int(gid))
        if g is None:
            raise ApiError(404, 10004, "Unknown Guild")
        return g

    # ------------------------------------------------------------------ channels & messages
    async def _r_get_channel(self, rec: Request, cid: str) -> Reply:
        ch = self._live_channel(cid)
        return 200, ch.payload(self.bot_user.id if ch.is_thread else None)

    async def _r_edit_channel(self, rec: Request, cid: str) -> Reply:
        ch = self._live_channel(cid)
        body = rec.json or {}
        for key in ("name", "topic", "archived", "locked", "auto_archive_duration"):
            if key in body and body[key] is not None:
                setattr(ch, key, body[key])
        await self._dispatch_if_ready(
            "THREAD_UPDATE" if ch.is_thread else "CHANNEL_UPDATE", ch.payload(), I_GUILDS
        )
        return 200, ch.payload()

    async def _r_delete_channel(self, rec: Request, cid: str) -> Reply:
        ch = self._live_channel(cid)
        payload = ch.payload()
        await self.delete_channel(ch)
        return 200, payload

    async def _r_typing(self, rec: Request, cid: str) -> Reply:
        self._live_channel(cid)
        self.typing.append(int(cid))
        return 204, None

    async def _r_history(self, rec: Request, cid: str) -> Reply:
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

    async def _r_get_message(self, rec: Request, cid: str, mid: str) -> Reply:
        ch = self._live_channel(cid)
        return 200, self.message_payload(self._live_message(ch, mid))

    async def _r_send(self, rec: Request, cid: str) -> Reply:
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

    async def _r_edit_message(self, rec: Request, cid: str, mid: str) -> Reply:
        ch = self._live_channel(cid)
        m = self._live_message(ch, mid)
        if m.author.id != self.bot_user.id:
            raise ApiError(403, 50005, "Cannot edit a message authored by another user")
        await self._edit_message(m, rec.json if isinstance(rec.json, dict) else {}, rec.files)
        return 200, self.message_payload(m)

    async def _r_delete_message(self, rec: Request, cid: str, mid: str) -> Reply:
        ch = self._live_channel(cid)
        m = self._live_message(ch, mid)
        if m.author.id != self.bot_user.id:
            self._require(ch, "manage_messages")
        await self.delete_message(m)
        return 204, None

    # ------------------------------------------------------------------ threads
    def _check_thread_allowed(self, ch: Channel, private: bool = False) -> None:
        if ch.is_thread:
            raise ApiError(400, 50024, "Cannot execute action on this channel type")
        if ch.id in self._denied_thread_channels:
            raise missing_permissions()
        self._require(ch, "view_channel", "create_private_threads" if private else "create_public_threads")

    async def _new_thread(self, parent: Channel, body: dict[str, Any], tid: int, ttype: int) -> Channel:
        name = (body.get("name") or "thread")[:100]
        th = Channel(
            tid,
            parent.guild_id,
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

    async def _r_thread_from_message(self, rec: Request, cid: str, mid: str) -> Reply:
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

    async def _r_thread_without_message(self, rec: Request, cid: str) -> Reply:
        ch = self._live_channel(cid)
        body = rec.json or {}
        if "message" in body:
            raise ApiError(400, 50024, "Cannot execute action on this channel type (forum posts unsupported)")
        ttype = int(body.get("type") or 12)
        self._check_thread_allowed(ch, private=ttype == 12)
        th = await self._new_thread(ch, body, self.sf.next(), ttype)
        return 201, th.payload(self.bot_user.id)

    # ------------------------------------------------------------------ reactions
    async def _r_add_reaction(self, rec: Request, cid: str, mid: str, emoji: str) -> Reply:
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

    async def _r_remove_reaction(self, rec: Request, cid: str, mid: str, emoji: str, who: str) -> Reply:
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

    async def _r_reaction_users(self, rec: Request, cid: str, mid: str, emoji: str) -> Reply:
        ch = self._live_channel(cid)
        m = self._live_message(ch, mid)
        return 200, [self.users[u].payload() for u in m.reactions.get(emoji, []) if u in self.users]

    async def _r_clear_reactions(self, rec: Request, cid: str, mid: str, emoji: str | None = None) -> Reply:
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
            "guild_id": str(m.guild_id),
            "emoji": self._emoji_payload(emoji),
            "burst": False,
            "type": 0,
        }
        if t == "MESSAGE_REACTION_ADD":
            d["member"] = user.member_payload(guild=self.guilds.get(m.guild_id))
            d["message_author_id"] = str(m.author.id)
            d["burst_colors"] = []
        await self._dispatch_if_ready(t, d, I_REACTIONS)

    # ------------------------------------------------------------------ test-side actions (users)
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
        self._check_member(user, ch)
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
        self._check_member(user, self._channel(message.channel_id))
        users = message.reactions.setdefault(emoji, [])
        if user.id not in users:
            users.append(user.id)
        await self._dispatch_reaction("MESSAGE_REACTION_ADD", user, message, emoji)

    async def unreact(self, user: User, message: Message, emoji: str) -> None:
        users = message.reactions.get(emoji, [])
        if user.id in users:
            users.remove(user.id)
        await self._dispatch_reaction("MESSAGE_REACTION_REMOVE", user, message, emoji)
