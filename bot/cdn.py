"""Download an attachment from Discord's CDN: every redirect checked, the bytes capped.

discord.py's ``get_from_cdn`` follows any redirect and reads any length into memory, so a CDN
(or a proxy in front of it) that answered with a redirect could make the bot fetch a link-local
metadata service or a port on its own host, and a body larger than the payload claimed would be
read whole. Here each hop must pass ``may_download`` (Discord's CDN or the API base), at most
``MAX_REDIRECTS`` hops are followed, and reading stops one byte past ``max_bytes``.
"""

from __future__ import annotations

import aiohttp
import discord
import yarl

from bot.config import DiscordConfig
from bot.endpoints import may_download
from engine import BadImage, UserError

MAX_REDIRECTS = 3
TIMEOUT = aiohttp.ClientTimeout(total=120, sock_connect=15, sock_read=30)
_REDIRECTS = (301, 302, 303, 307, 308)


async def get_attachment(client: discord.Client, url: str, cfg: DiscordConfig, max_bytes: int,
                         what: str = "image") -> bytes:
    """The bytes at ``url`` (already checked with ``may_download``); ``UserError`` with one line otherwise."""
    http = client.http
    trace = [t] if (t := http.http_trace) is not None else []  # a test's tracer sees these requests too
    async with aiohttp.ClientSession(timeout=TIMEOUT, trace_configs=trace) as session:
        for _hop in range(MAX_REDIRECTS + 1):
            got = session.get(url, allow_redirects=False, proxy=http.proxy, proxy_auth=http.proxy_auth)
            async with got as resp:
                if resp.status in _REDIRECTS:
                    target = str(yarl.URL(url).join(yarl.URL(resp.headers.get("Location", ""))))
                    if not may_download(target, cfg):
                        raise BadImage(f"the {what} link leads off Discord; attach the file itself")
                    url = target
                    continue
                if resp.status != 200:
                    raise UserError(f"I could not download the {what} ({resp.status}); upload it again")
                too_big = BadImage(f"the {what} is larger than the {max_bytes / 1024 / 1024:.1f} MiB limit")
                if (resp.content_length or 0) > max_bytes:
                    raise too_big
                data = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    data += chunk
                    if len(data) > max_bytes:
                        raise too_big
                return bytes(data)
    raise UserError(f"I could not download the {what} (too many redirects); upload it again")
