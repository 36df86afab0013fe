"""The bot's tables of ``config.toml``: ``[discord]``, ``[moderation]``, ``[http]`` (its web server) and ``[gallery]``.

``load_bot_config`` splits the bot's tables off the file, validates the rest as the engine's
``Config`` and each of its own as its model; ``BotConfig`` holds them all. A typo in either is a
start-up error naming the file and the key. This module imports neither discord.py nor torch, so
the healthcheck stays light. The token never lives here: it comes from ``$DISCORD_TOKEN`` only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, Field, SecretStr, field_validator

from bot.wordfilter import Rule, check_entry
from engine import Config, ConfigError, GridSize, Section, read_toml, validate

DEFAULT_API_BASE = "https://discord.com"
GALLERY_SECRET_ENV = "VQGAN_CLIP_GALLERY_SECRET"
MIN_SECRET_CHARS = 16
HEARTBEAT_FILE = "heartbeat"  # under data_dir: touched while connected, read by ``python -m bot.health``

# A role: its id (int, or digits in a str), "SERVER_ID/Name", or a bare name (see bot.roles).
RoleRef = int | str


class DiscordConfig(Section):
    """Everything the Discord front end needs besides the token."""

    # Where discord.py talks to: REST, interactions, gateway, CDN downloads. ``$DISCORD_API_BASE``
    # wins over this. Tests point it at a fake server; a deployment may point it at a proxy.
    api_base: str = DEFAULT_API_BASE
    # Gateway URL; empty = derived from api_base (wss://gateway.discord.gg for Discord itself).
    gateway_url: str = ""
    # Tries to reach Discord at start before giving up with exit 1 (a supervisor, e.g. Docker's
    # restart policy, then starts the bot again later).
    connect_attempts: int = Field(4, ge=1)
    # Seconds before the second try; doubled before each further one.
    connect_backoff_s: float = Field(2.0, ge=0)
    # Forward proxy for every Discord connection (REST, gateway, CDN), e.g. "http://proxy:3128"; empty = none.
    http_proxy: str = ""
    # Guild ids to sync slash commands to (instant); empty = sync globally (can take an hour).
    guilds: list[int] = Field(default_factory=list)
    # Guild ids the bot answers in; empty = every guild it is in.
    allowed_guilds: list[int] = Field(default_factory=list)
    # Channel ids the bot answers in (a thread counts as its parent channel); empty = all.
    allowed_channels: list[int] = Field(default_factory=list)
    # Roles allowed to use the bot; empty = everyone. A role is its id, "SERVER_ID/Name", or a bare
    # name counted only on the servers in guilds / allowed_guilds (see bot.roles).
    allowed_roles: list[RoleRef] = Field(default_factory=list)
    # Roles (as allowed_roles) that may cancel any job asked in their own server; its Administrators always may.
    moderator_roles: list[RoleRef] = Field(default_factory=list)
    # Whether people may use the bot in direct messages (no threads there).
    allow_dms: bool = False
    # Reaction on a result that reruns its request with a new seed.
    rerun_emoji: str = "🔁"
    # Reaction on a job's status message that cancels it (owner or moderator).
    cancel_emoji: str = "❌"
    # Reaction on a result that asks for a variation: its own picture as the start, a new seed,
    # editing.vary_strength of its steps, pulled towards it by editing.keep_structure/keep_latent.
    vary_emoji: str = "🎲"
    # Minimum seconds between two progress updates of one job (Discord rate limits).
    progress_interval_s: float = Field(5.0, ge=0)
    # Longest wait for one progress or status edit, rate limits included: a progress edit is then
    # skipped (the next one comes), and a job's final status is posted as a new message.
    edit_wait_s: float = Field(5.0, gt=0)
    # A rate limit longer than this is not waited out by discord.py (its max_ratelimit_timeout, 30 at
    # least): the call fails at once; a result then waits it out itself, an edit is skipped.
    max_ratelimit_timeout_s: float = Field(30.0, ge=30)
    # Candidates /imagine paints as one grid (1, 2, 4, 6 or 9; its count option overrides): buttons U1..Un
    # upscale one of them, V1..Vn vary one; 1 = a single picture.
    grid: GridSize = 4
    # Post a progress image every N steps; 0 = use generation.progress_every.
    progress_every: int = Field(0, ge=0)
    # Largest file the bot uploads; bigger PNGs are re-encoded/downscaled. Discord's default is 10 MiB.
    filesize_limit: int = Field(10 * 1024 * 1024, ge=64 * 1024)
    # Where the bot keeps downloaded attachments, the command-sync hash and the heartbeat file.
    data_dir: str = "data/discord"
    # Seconds between heartbeat-file touches while the gateway session is up; ``python -m bot.health``
    # (the Docker healthcheck) says unhealthy once the file is 3 x this old.
    heartbeat_s: float = Field(30.0, gt=0)
    # Image types accepted as attachments.
    image_types: list[str] = Field(
        default_factory=lambda: ["image/png", "image/jpeg", "image/webp", "image/gif", "image/bmp"]
    )
    # Thread auto-archive after this many minutes of quiet (60, 1440, 4320 or 10080).
    thread_archive_minutes: int = 1440
    # Seconds after which a refusal posted in a channel (gestures cannot be ephemeral) is deleted.
    notice_delete_after_s: float = Field(20.0, ge=0)
    # Styles (/style save) each person may keep, and each server (its moderators' server styles).
    max_styles: int = Field(25, ge=1)

    @field_validator("thread_archive_minutes")
    @classmethod
    def _archive(cls, v: int) -> int:
        if v not in (60, 1440, 4320, 10080):
            raise ValueError("must be 60, 1440, 4320 or 10080")
        return v

    @field_validator("api_base")
    @classmethod
    def _base(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser()

    @property
    def heartbeat_path(self) -> Path:
        return self.data_path / HEARTBEAT_FILE


def _entry(v: str) -> str:
    check_entry(v)
    return v


# A banned entry, checked once at start-up: a bad ``re:`` rule is a config error naming it and its place.
BannedEntry = Annotated[str, AfterValidator(_entry)]


class GuildModeration(Section):
    """``[moderation.guilds.<server id>]``: one server's own list and log channel."""

    # Added to the global list on this server (or instead of it, with replace = true).
    banned: list[BannedEntry] = Field(default_factory=list)
    # True: this server uses its own list only, not [moderation] banned.
    replace: bool = False
    # This server's log channel; unset = [moderation] log_channel; 0 = none for this server.
    log_channel: int | None = Field(None, ge=0)


class ModerationConfig(Section):
    """``[moderation]``: banned words and rules, and the channel that hears about requests."""

    # Words (matched as whole words, case-insensitively, after Unicode normalisation) and
    # "re:PATTERN" regular expressions (see bot.wordfilter). Moderators add more with /moderation ban.
    banned: list[BannedEntry] = Field(default_factory=list)
    # A channel id: one line per accepted request and per refusal (bot.modlog); 0 = none.
    log_channel: int = Field(0, ge=0)
    # Per-server overrides, keyed by server id.
    guilds: dict[int, GuildModeration] = Field(default_factory=dict)

    def rules_for(self, guild_id: int | None) -> list[Rule]:
        """The configured rules that hold on ``guild_id`` (None: direct messages, the global list)."""
        own = self.guilds.get(guild_id) if guild_id is not None else None
        rules = [] if own is not None and own.replace else [Rule(e, "config") for e in self.banned]
        if own is not None:
            rules += [Rule(e, "server config") for e in own.banned]
        return rules

    def log_channel_for(self, guild_id: int | None) -> int | None:
        """Where the lines about a request on ``guild_id`` go, or None."""
        own = self.guilds.get(guild_id) if guild_id is not None else None
        channel = own.log_channel if own is not None and own.log_channel is not None else self.log_channel
        return channel or None


class HttpConfig(Section):
    """The bot's own web server (``/healthz``, ``/metrics``, the gallery); off while ``port`` is 0."""

    host: str = "127.0.0.1"  # the address it listens on; "0.0.0.0" = every interface
    port: int = Field(0, ge=0, le=65535)  # 0 = no web server
    # A connection that has not sent a whole request head this long after it opened (or after its last
    # answer) is closed: a client sending its headers byte by byte holds nothing for long.
    read_timeout_s: float = Field(10.0, gt=0, le=300)
    handler_timeout_s: float = Field(30.0, gt=0, le=600)  # longest one answer may take (a timelapse encodes)

    @property
    def enabled(self) -> bool:
        return self.port != 0


class GalleryConfig(Section):
    """The web gallery: signed, expiring links to a person's results (a server's, for its moderators)."""

    enabled: bool = False
    # The key that signs the links (at least 16 characters); "" = $VQGAN_CLIP_GALLERY_SECRET. Changing it
    # invalidates every link given out.
    secret: SecretStr = SecretStr("")  # never shown in a repr or a log
    # The address people reach the web server at (a reverse proxy's https://...); "" = http://host:port.
    public_url: str = ""
    link_ttl_s: float = Field(86400.0, gt=0, le=90 * 86400)  # how long a link works
    per_page: int = Field(60, ge=1, le=500)  # results on one page, newest first

    @field_validator("public_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v.rstrip("/")


class BotConfig(Config):
    """The engine's config (what the job queue reads) plus the bot's ``[discord]``, ``[moderation]``, ``[http]``
    and ``[gallery]`` tables."""

    discord: DiscordConfig = DiscordConfig()
    moderation: ModerationConfig = ModerationConfig()
    http: HttpConfig = HttpConfig()
    gallery: GalleryConfig = GalleryConfig()

    def gallery_url(self) -> str:
        """Where people reach the gallery: ``gallery.public_url``, else the web server's own address."""
        return self.gallery.public_url or f"http://{self.http.host}:{self.http.port}"

    def progress_every(self) -> int:
        return self.discord.progress_every or self.generation.progress_every


def _table(data: dict[str, object], name: str, path: str | os.PathLike[str] | None) -> dict[str, object]:
    table = data.pop(name, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: {name}: must be a table ([{name}])")
    return table


def load_bot_config(path: str | os.PathLike[str] | None = None) -> BotConfig:
    """Read ``config.toml`` (or defaults): the engine's tables, then ``[discord]`` with
    ``$DISCORD_API_BASE`` applied, ``[moderation]``, ``[http]``, and ``[gallery]`` with
    ``$VQGAN_CLIP_GALLERY_SECRET``."""
    data = read_toml(path) if path is not None else {}
    table = _table(data, "discord", path)
    moderation = _table(data, "moderation", path)
    http = validate(HttpConfig, _table(data, "http", path), path, "http")
    gallery = validate(GalleryConfig, _table(data, "gallery", path), path, "gallery")
    engine = validate(Config, data, path)
    if env := os.environ.get("DISCORD_API_BASE"):
        validate(DiscordConfig, {"api_base": env}, "$DISCORD_API_BASE", "discord")  # its own error, naming it
        table = {**table, "api_base": env}
    if gallery.enabled:
        if not gallery.secret.get_secret_value():
            gallery = gallery.model_copy(update={"secret": SecretStr(os.environ.get(GALLERY_SECRET_ENV, ""))})
        if len(gallery.secret.get_secret_value()) < MIN_SECRET_CHARS:
            raise ConfigError(f"{path or 'config'}: gallery.secret: set it (or ${GALLERY_SECRET_ENV}) to at least "
                              f"{MIN_SECRET_CHARS} random characters, e.g. the output of `openssl rand -hex 32`")
        if not http.enabled:
            raise ConfigError(f"{path or 'config'}: gallery.enabled: the gallery needs the web server: set http.port")
    return BotConfig(**dict(engine), discord=validate(DiscordConfig, table, path, "discord"),
                     moderation=validate(ModerationConfig, moderation, path, "moderation"), http=http, gallery=gallery)
