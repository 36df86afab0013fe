"""Point discord.py at a Discord API base other than discord.com (a fake server or a proxy).

discord.py keeps its URLs in class attributes; a plain ``Bot`` never asks ``/gateway``, so the
gateway URL must be set too. Attachment URLs come in payloads; the ones on Discord's CDN are
rewritten to the base so that downloads go the same way as every other request. A payload's URL
is only fetched when it points at Discord's CDN or at the base itself (``may_download``): anything
else (a link-local metadata service, a port on the bot's own host) is refused unread.
"""

from __future__ import annotations

import discord
import discord.asset
import discord.gateway
import discord.http
import yarl

from bot.config import DEFAULT_API_BASE, DiscordConfig

_DISCORD_REST = discord.http.Route.BASE
_DISCORD_GATEWAY = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
_DISCORD_CDN = discord.asset.Asset.BASE
CDN_HOSTS = ("cdn.discordapp.com", "media.discordapp.net")


def gateway_for(cfg: DiscordConfig) -> yarl.URL:
    """The gateway websocket URL: configured, Discord's own, or ``ws(s)://<api_base>/``."""
    if cfg.gateway_url:
        return yarl.URL(cfg.gateway_url)
    base = cfg.api_base.rstrip("/")
    if base == DEFAULT_API_BASE:
        return _DISCORD_GATEWAY
    url = yarl.URL(base)
    return url.with_scheme("wss" if url.scheme == "https" else "ws").with_path(url.path.rstrip("/") + "/")


def point_at(cfg: DiscordConfig) -> None:
    """Set every URL discord.py uses from ``cfg.api_base``; call before the client connects."""
    base = cfg.api_base.rstrip("/")
    if base == DEFAULT_API_BASE:
        discord.http.Route.BASE = _DISCORD_REST
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = _DISCORD_GATEWAY
        discord.asset.Asset.BASE = _DISCORD_CDN
        return
    from discord.http import INTERNAL_API_VERSION

    discord.http.Route.BASE = f"{base}/api/v{INTERNAL_API_VERSION}"
    discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = gateway_for(cfg)
    discord.asset.Asset.BASE = base


def _origin(u: yarl.URL) -> tuple[str, str, int | None]:
    return u.scheme.lower(), (u.host or "").lower(), u.port


def may_download(url: str, cfg: DiscordConfig) -> bool:
    """Whether ``url`` is on Discord's CDN (https) or on the API base (same scheme, host and port)."""
    try:
        u = yarl.URL(url)
    except (TypeError, ValueError):
        return False
    if not u.is_absolute() or u.user is not None:
        return False
    allowed: set[tuple[str, str, int | None]] = {("https", host, 443) for host in CDN_HOSTS}
    allowed.add(_origin(yarl.URL(cfg.api_base.rstrip("/"))))
    return _origin(u) in allowed


def cdn_url(url: str, cfg: DiscordConfig) -> str:
    """Rewrite a Discord CDN URL onto the API base when it is not Discord's own."""
    base = cfg.api_base.rstrip("/")
    if base == DEFAULT_API_BASE:
        return url
    u = yarl.URL(url)
    if u.host not in CDN_HOSTS:
        return url
    b = yarl.URL(base)
    return str(u.with_scheme(b.scheme).with_host(b.host or "").with_port(b.port))
