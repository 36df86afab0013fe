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
        self.cdn_redirects: dict[str, str] = {}  # attachment file name -> a Location the CDN answers with
        self.cdn_bodies: dict[str, bytes] = {}  # attachment file name -> other bytes than its payload says
        self.cdn_sent: dict[str, int] = {}  # ...and how many of them were sent before the client hung up
        super().__init__(**kwargs)

    async def _stream(self, request: web.Request, name: str, body: bytes) -> web.StreamResponse:
        """``body`` in 1 MiB pieces, counting what went out until the client stops reading."""
        resp = web.StreamResponse(headers={"Content-Type": "image/png"})  # no length: chunked
        await resp.prepare(request)
        self.cdn_sent[name] = 0
        with contextlib.suppress(ConnectionError, RuntimeError):
            for i in range(0, len(body), 1 << 20):
                await resp.write(body[i:i + (1 << 20)])
                self.cdn_sent[name] += len(body[i:i + (1 << 20)])
            await resp.write_eof()
        return resp

    async def _cdn(self, request: web.Request) -> web.StreamResponse:
        self.cdn_requests.append(request.path)
        if self.cdn_delay:
            await asyncio.sleep(self.cdn_delay)
        parts = request.path.strip("/").split("/")
        if (to := self.cdn_redirects.get(parts[-1])) is not None:
            return web.Response(status=302, headers={"Location": to})
        if (body := self.cdn_bodies.get(parts[-1])) is not None:
            return await self._stream(request, parts[-1], body)
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
