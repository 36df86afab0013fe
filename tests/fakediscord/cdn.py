"""CDN resource: attachment downloads (and placeholder avatars/icons), optionally slow."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from aiohttp import web

from .state import State

TINY_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


class Cdn(State):
    """Serves the bytes ``_store_attachment`` kept, at the URL it gave (``/attachments/…``)."""

    def __init__(self, **kwargs: Any) -> None:
        self.cdn_delay = 0.0  # seconds each CDN download takes (slow downloads)
        self.cdn_requests: list[str] = []  # paths of CDN downloads, in order
        super().__init__(**kwargs)

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
