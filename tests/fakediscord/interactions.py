"""Interactions resource: application commands, interaction callbacks, webhook followups, and the test-side
gestures (slash commands, context menus, modals, buttons) that dispatch INTERACTION_CREATE."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import dataclass, field
from typing import Any

from .models import (
    ApiError,
    Channel,
    Message,
    Reply,
    Request,
    Role,
    Route,
    UploadedFile,
    User,
    invalid_webhook_token,
    unknown_channel,
    unknown_message,
)
from .state import State


@dataclass
class Callback:
    """One accepted POST /interactions/{id}/{token}/callback."""

    type: int  # 1 pong, 4 message, 5 deferred message, 6 deferred update, 7 update, 8 autocomplete, 9 modal
    data: dict[str, Any] | None
    files: list[UploadedFile]
    at: float


@dataclass(eq=False)
class Interaction:
    id: int
    token: str
    type: int  # 2 application command, 3 component, 5 modal submit
    payload: dict[str, Any]
    user: User
    channel_id: int
    dispatched_at: float
    server: State = field(repr=False)
    responses: list[Callback] = field(default_factory=list)
    followups: list[Message] = field(default_factory=list)  # created via POST /webhooks/{app}/{token}
    original: Message | None = None  # @original (from callback type 4/5)
    modal: dict[str, Any] | None = None  # data of a type-9 callback
    requests: list[Request] = field(default_factory=list)  # every callback/webhook call, incl. failed
    expired: bool = False

    @property
    def data(self) -> dict[str, Any]:
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


class Interactions(State):
    """Registered commands by scope, every interaction dispatched, Discord's callback and webhook rules."""

    def __init__(self, **kwargs: Any) -> None:
        self.interaction_timeout = 3.0  # seconds to the first callback (then 404 10062 Unknown interaction)
        self.token_ttl = 15 * 60.0  # interaction token lifetime for followups (then 401 50027)
        self.command_syncs: list[tuple[int | None, list[dict[str, Any]]]] = []  # (guild_id or None, PUT body)
        self.commands: dict[int | None, list[dict[str, Any]]] = {}  # registered commands by scope
        super().__init__(**kwargs)

    def _interaction_routes(self) -> list[Route]:
        S = r"(\d+)"
        return [
            ("GET", rf"/applications/{S}/commands", self._r_get_commands),
            ("PUT", rf"/applications/{S}/commands", self._r_put_commands),
            ("POST", rf"/applications/{S}/commands", self._r_post_command),
            ("GET", rf"/applications/{S}/guilds/{S}/commands", self._r_get_commands),
            ("PUT", rf"/applications/{S}/guilds/{S}/commands", self._r_put_commands),
            ("POST", rf"/applications/{S}/guilds/{S}/commands", self._r_post_command),
            ("DELETE", rf"/applications/{S}/(?:guilds/\d+/)?commands/{S}", self._r_delete_command),
            ("POST", rf"/interactions/{S}/([^/]+)/callback", self._r_callback),
            ("POST", rf"/webhooks/{S}/([^/]+)", self._r_webhook_execute),
            ("GET", rf"/webhooks/{S}/([^/]+)/messages/(@original|\d+)", self._r_webhook_get),
            ("PATCH", rf"/webhooks/{S}/([^/]+)/messages/(@original|\d+)", self._r_webhook_edit),
            ("DELETE", rf"/webhooks/{S}/([^/]+)/messages/(@original|\d+)", self._r_webhook_delete),
        ]

    # ------------------------------------------------------------------ application commands

    def _command_scope(self, gid: str | None) -> int | None:
        return int(gid) if gid else None

    def _materialize_command(
        self, c: dict[str, Any], scope: int | None, old: list[dict[str, Any]]
    ) -> dict[str, Any]:
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

    async def _r_get_commands(self, rec: Request, app: str, gid: str | None = None) -> Reply:
        return 200, self.commands.get(self._command_scope(gid), [])

    async def _r_put_commands(self, rec: Request, app: str, gid: str | None = None) -> Reply:
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

    async def _r_post_command(self, rec: Request, app: str, gid: str | None = None) -> Reply:
        scope = self._command_scope(gid)
        old = self.commands.setdefault(scope, [])
        c = self._materialize_command(rec.json, scope, old)
        self.commands[scope] = [o for o in old if o["name"] != c["name"]] + [c]
        return 201, c

    async def _r_delete_command(self, rec: Request, app: str, cid: str) -> Reply:
        for scope, cmds in self.commands.items():
            self.commands[scope] = [c for c in cmds if c["id"] != cid]
        return 204, None

    def find_command(
        self, name: str, type: int = 1, guild_id: int | None = None
    ) -> tuple[dict[str, Any] | None, int | None]:
        """(registered command, guild id or None for global) as seen in ``guild_id`` (default: the first
        guild) — guild commands win, like Discord."""
        for scope in (guild_id or self.guild_id, None):
            for c in self.commands.get(scope, []):
                if c["name"] == name and c.get("type", 1) == type:
                    return c, scope
        return None, None

    # ------------------------------------------------------------------ callbacks & webhooks (followups)
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

    async def _r_callback(self, rec: Request, iid: str, token: str) -> Reply:
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
        ch = self._channel(inter.channel_id)  # interactions only come from channels the fake made
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
            if ctype == 8:
                self._validate_choices(data.get("choices") or [])
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

    @staticmethod
    def _validate_choices(choices: list[dict[str, Any]]) -> None:
        """Discord's limits on autocomplete choices: at most 25, names 1-100 characters, string values <= 100."""
        bad = len(choices) > 25 or any(
            not 1 <= len(str(c.get("name", ""))) <= 100
            or (isinstance(c.get("value"), str) and len(c["value"]) > 100)
            for c in choices
        )
        if bad:
            raise ApiError(400, 50035, "Invalid Form Body", {"data": {"choices": {"_errors": [
                {"code": "BASE_TYPE_BAD_LENGTH", "message": "Must be between 1 and 100 in length."}]}}})

    def _webhook_message(self, inter: Interaction, which: str) -> Message:
        m = inter.original if which == "@original" else self.messages.get(int(which))
        if m is None or m.deleted or (m is not inter.original and m not in inter.followups):
            raise unknown_message()
        return m

    async def _r_webhook_execute(self, rec: Request, app: str, token: str) -> Reply:
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

    async def _r_webhook_get(self, rec: Request, app: str, token: str, which: str) -> Reply:
        inter = self._interaction_by_token(app, token)
        return 200, self.message_payload(self._webhook_message(inter, which))

    async def _r_webhook_edit(self, rec: Request, app: str, token: str, which: str) -> Reply:
        inter = self._interaction_by_token(app, token)
        m = self._webhook_message(inter, which)
        await self._edit_message(m, rec.json if isinstance(rec.json, dict) else {}, rec.files)
        return 200, self.message_payload(m)

    async def _r_webhook_delete(self, rec: Request, app: str, token: str, which: str) -> Reply:
        inter = self._interaction_by_token(app, token)
        m = self._webhook_message(inter, which)
        await self.delete_message(m)
        return 204, None

    # ------------------------------------------------------------------ test-side actions (users)
    def _interaction_payload(
        self, itype: int, user: User, ch: Channel, data: dict[str, Any] | None, message: Message | None
    ) -> tuple[int, str, dict[str, Any]]:
        iid, token = self.sf.next(), "itok." + secrets.token_urlsafe(32)
        payload: dict[str, Any] = {
            "id": str(iid),
            "application_id": str(self.app_id),
            "type": itype,
            "guild_id": str(ch.guild_id),
            "guild": {"id": str(ch.guild_id), "locale": "en-US", "features": []},
            "channel_id": str(ch.id),
            "channel": ch.payload(),
            "member": self.member_payload(user, ch),
            "token": token,
            "version": 1,
            "app_permissions": str(self.permissions_for(self.bot_user, ch)),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(ch.guild_id)},
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
        data: dict[str, Any] | None,
        message: Message | None = None,
    ) -> Interaction:
        ch = self._channel(channel)
        self._check_member(user, ch)
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
        cmd, scope = self.find_command(parts[0], 1, ch.guild_id)
        schema = (cmd or {}).get("options", [])
        for p in parts[1:]:
            schema = next((o.get("options", []) for o in schema if o["name"] == p), [])
        stypes = {o["name"]: o.get("type") for o in schema}
        resolved: dict[str, dict[str, Any]] = {}
        opts: list[dict[str, Any]] = []
        for k, v in (options or {}).items():
            t = self._option_type(v, stypes.get(k))
            value = v
            if isinstance(v, User):
                value = str(v.id)
                resolved.setdefault("users", {})[value] = v.payload()
                resolved.setdefault("members", {})[value] = {
                    **v.member_payload(False, self.guilds[ch.guild_id]),
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
        for k, (filename, content, ctype) in (attachments or {}).items():
            a = self._store_attachment(ch.id, filename, content, ctype)
            a.ephemeral = True
            a.url = (attachment_urls or {}).get(k) or a.url.replace(
                "/attachments/", "/ephemeral-attachments/"
            )
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

    async def autocomplete(self, user: User, channel: Channel | int, name: str, focused: str,
                           typed: str = "", options: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Type ``typed`` into option ``focused`` of command ``name``; returns the choices the bot offers."""
        cmd, scope = self.find_command(name, 1, self._channel(channel).guild_id)
        stypes = {o["name"]: o.get("type") for o in (cmd or {}).get("options", [])}
        opts = [{"name": k, "type": self._option_type(v, stypes.get(k)), "value": v} for k, v in (options or {}).items()]
        opts.append({"name": focused, "type": stypes.get(focused, 3), "value": typed, "focused": True})
        data: dict[str, Any] = {"id": cmd["id"] if cmd else str(self.sf.next()), "name": name, "type": 1,
                                "options": opts}
        if scope is not None:
            data["guild_id"] = str(scope)
        inter = await self._send_interaction(4, user, channel, data)
        callback = await inter.wait_response()
        assert callback.type == 8, callback
        return list(callback.data.get("choices", []))

    async def context_menu(
        self, user: User, channel: Channel | int, target_message: Message, name: str
    ) -> Interaction:
        """Dispatch a message context-menu command (data.type 3) on ``target_message``."""
        cmd, scope = self.find_command(name, 3, self._channel(channel).guild_id)
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

    async def select(self, user: User, message: Message, custom_id: str, values: list[str]) -> Interaction:
        """Pick ``values`` in the string select menu ``custom_id`` of one of the bot's messages (a component
        interaction, component type 3). Like Discord's client, only the menu's own options can be picked:
        a missing menu or an option it does not offer raises ValueError here."""
        menus = [c for row in message.components for c in row.get("components", [])
                 if c.get("type") == 3 and c.get("custom_id") == custom_id]
        if not menus:
            raise ValueError(f"message {message.id} has no select menu {custom_id!r}")
        offered = {o["value"] for o in menus[0].get("options", [])}
        if not set(values) <= offered or not menus[0].get("min_values", 1) <= len(values) <= menus[0].get(
                "max_values", 1):
            raise ValueError(f"select menu {custom_id!r} offers {sorted(offered)}, not {values}")
        data = {"custom_id": custom_id, "component_type": 3, "values": list(values)}
        return await self._send_interaction(3, user, message.channel_id, data, message)
