"""Faults the tests inject: REST errors (429 with rate-limit headers, 5xx, any status, Discord's error codes such
as 30046), expired interaction tokens, refused threads, and deletions/archiving done "by a moderator" behind the
bot's back. (Taking the gateway down is in gateway.py.)"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from typing import Any

from .models import Channel, Message
from .state import I_GUILDS, I_MESSAGES, State

# Discord's words for the error codes tests inject (``fail_next(..., code=...)``).
MESSAGES = {
    30046: "Maximum number of edits to messages older than 1 hour reached. Try again later.",
    50005: "Cannot edit a message authored by another user",
    50035: "Invalid Form Body",
}


@dataclass
class _Fault:
    method: str
    regex: re.Pattern[str]
    status: int
    retry_after: float
    count: int
    body: dict[str, Any] | None
    code: int | None


class Faults(State):
    """Pending REST faults (consumed by the REST dispatcher in server.py) and world-changing test actions."""

    def __init__(self, **kwargs: Any) -> None:
        self._faults: list[_Fault] = []
        self._denied_thread_channels = set()
        super().__init__(**kwargs)

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int = 429,
        retry_after: float = 0.2,
        count: int = 1,
        body: dict[str, Any] | None = None,
        code: int | None = None,
    ) -> None:
        """Answer the next ``count`` REST calls matching (method or '*', re.search on the path without
        /api/v10) with ``status``. 429s carry retry_after + X-RateLimit-*/Retry-After/Via headers.
        ``code``: Discord's error code in the body, e.g. ``status=429, code=30046`` (too many edits of a
        message older than an hour: discord.py retries it as a rate limit, then raises it)."""
        self._faults.append(
            _Fault(method.upper(), re.compile(path_regex), status, retry_after, count, body, code)
        )

    def clear_faults(self) -> None:
        """Drop every pending ``fail_next`` fault: Discord answers normally again."""
        self._faults.clear()

    def _fault_for(self, method: str, path: str) -> _Fault | None:
        for f in self._faults:
            if f.count > 0 and f.method in ("*", method) and f.regex.search(path):
                f.count -= 1
                return f
        return None

    def _fault_response(self, f: _Fault) -> tuple[int, Any, dict[str, str]]:
        if f.status == 429:
            body = f.body or {
                "message": MESSAGES.get(f.code or 0, "You are being rate limited."),
                "retry_after": f.retry_after,
                "global": False,
                **({"code": f.code} if f.code is not None else {}),
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
            "message": MESSAGES.get(f.code or 0, default),
            "code": f.code if f.code is not None else (50013 if f.status == 403 else 0),
        }
        return f.status, body, {}

    # ------------------------------------------------------------------ interactions & threads
    def expire_tokens(self) -> None:
        """Every interaction token issued so far is now expired (15 minutes passed)."""
        for i in self.interactions:
            i.expired = True

    def deny_threads(self, channel: Channel | int) -> None:
        """Thread creation in this channel fails with 403 50013 Missing Permissions."""
        self._denied_thread_channels.add(self._channel(channel).id)

    # ------------------------------------------------------------------ moderator actions
    async def delete_channel(self, channel: Channel | int) -> None:
        ch = self._channel(channel)
        ch.deleted = True
        if ch.is_thread:
            d = {
                "id": str(ch.id),
                "guild_id": str(ch.guild_id),
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
        d = {"id": str(m.id), "channel_id": str(m.channel_id), "guild_id": str(m.guild_id)}
        await self._dispatch_if_ready("MESSAGE_DELETE", d, intent=I_MESSAGES)
