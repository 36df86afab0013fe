"""The Discord client: cogs, command sync, the embedded job queue and its delivery.

``setup_hook`` runs once, after login and before the gateway connects: that is where the queue
starts (so that recovered jobs' events find the delivery and metrics listeners subscribed), where the
web server starts (``[http]``: health, metrics, the gallery), and where the command tree is synced, only
when its JSON differs from the last successful sync.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot import replies, roles
from bot.config import BotConfig
from bot.delivery import Delivery
from bot.endpoints import point_at
from bot.inputs import StyleLookup
from bot.metrics import Metrics
from bot.moderation import Moderation
from bot.modlog import ModLog
from bot.origin import INTERACTION_TOKEN, TOKEN_EXPIRES_S
from bot.pending import Preparing
from bot.refusals import Refusals
from bot.uploads import prune_uploads
from bot.web.gallery import Gallery
from bot.web.server import WebServer
from engine import JobQueue, Preferences

if TYPE_CHECKING:
    from engine import Describer

log = logging.getLogger(__name__)

COGS = ("bot.cogs.imagine", "bot.cogs.zoom", "bot.cogs.gestures", "bot.cogs.queue", "bot.cogs.buttons",
        "bot.cogs.moderation", "bot.cogs.settings", "bot.cogs.styles", "bot.cogs.usage", "bot.cogs.describe",
        "bot.cogs.gallery")
SYNC_HASH_FILE = "commands.sha256"


def intents() -> discord.Intents:
    """Default intents plus message content (privileged: replies carry the prompt)."""
    i = discord.Intents.default()
    i.message_content = True
    i.members = False
    i.presences = False
    return i


class VQGANBot(commands.Bot):
    """A Bot that drives a ``JobQueue`` and posts its jobs' progress and results.

    The queue is made by the caller (``bot.__main__``, or a test with a fake runner) and handed
    in; the bot starts and closes it with itself. So is the ``describer`` (/describe); without one
    (``queue.backend = "redis"``: no models in this process) /describe says it is not available."""

    def __init__(self, cfg: BotConfig, queue: JobQueue, *, describer: Describer | None = None,
                 sync_commands: bool = True, **options: Any) -> None:
        point_at(cfg.discord)
        self.refusals = Refusals()  # refusals by kind (what /metrics exports)
        self.metrics = Metrics(queue, self.refusals)  # its own registry: two bots in one process count apart
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents(),
            help_command=None,
            allowed_mentions=replies.MENTIONS,
            proxy=cfg.discord.http_proxy or None,
            max_ratelimit_timeout=cfg.discord.max_ratelimit_timeout_s,  # longer limits fail fast (bot.delivery)
            http_trace=self.metrics.trace_config(options.pop("http_trace", None)),  # errors, counted by status
            **options,
        )
        self.metrics.ready = self.connected
        self.cfg = cfg
        self.queue = queue
        # people's /settings and /style: in the job store's file, which is this process's in both backends
        self.preferences = Preferences(cfg.queue.db_path)
        self.describer = describer
        self.delivery = Delivery(self, cfg, queue)
        self.preparing = Preparing()  # requests downloading: they count against the pending limit
        self.modlog = ModLog(self, cfg)  # [moderation] log_channel
        self.moderation = Moderation(cfg, self.modlog)  # banned words, checked before queueing
        self.styles: StyleLookup = self.preferences.style_text  # --style NAME -> its words (own, then the server's)
        self.sync_commands = sync_commands
        self.gallery = Gallery(cfg, queue, names=self.user_name) if cfg.gallery.enabled else None
        self.web = (WebServer(cfg.http, ready=self.connected, metrics=self.metrics,
                              routes=self.gallery.routes() if self.gallery else None) if cfg.http.enabled else None)
        self._unsubscribe: Callable[[], None] | None = None
        self._unsubscribe_metrics: Callable[[], None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._queue_started = False
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    async def setup_hook(self) -> None:
        for warning in roles.warnings(self.cfg):
            log.warning("%s", warning)
        self.cfg.discord.data_path.mkdir(parents=True, exist_ok=True)
        self.tree.on_error = self._on_tree_error  # type: ignore[method-assign]
        for cog in COGS:
            await self.load_extension(cog)
        if self.sync_commands:
            await self.sync_if_changed()
        pruned = await asyncio.to_thread(prune_uploads, self.cfg)
        if pruned:
            log.info("pruned %d old uploads", pruned)
        self._unsubscribe_metrics = self.queue.subscribe(self.metrics.observe)
        await self.preferences.open()  # first: it migrates the file the queue then opens
        self._unsubscribe = self.queue.subscribe(self.delivery)
        if self.web is not None:
            await self.web.start()  # /healthz says 503 until the gateway session is up
        await self.queue.start()
        self._queue_started = True
        await self.moderation.open()  # its table is in the job store's file, opened (and upgraded) just now
        await self.queue.expire_origin_key(INTERACTION_TOKEN, TOKEN_EXPIRES_S)  # jobs stored before expiry
        self._heartbeat = asyncio.create_task(self._beat(), name="heartbeat")

    async def close(self) -> None:
        """Stop the running job (it stays queued for the next start), then disconnect."""
        if not self._closing:
            self._closing = True
            if self._heartbeat is not None:
                self._heartbeat.cancel()
            if self.web is not None:
                await self.web.close()
            if self._queue_started:
                # Deliveries under way finish first, while the queue can still record them (a result
                # posted but not marked delivered would be posted again at the next start); then the
                # queue stops, and what it says while stopping is delivered last.
                await self.delivery.close()
                self.delivery.closing = True  # a job that ends while the queue stops is delivered before it closes
                try:
                    await self.queue.close()
                except Exception:
                    log.exception("closing the job queue failed")
                await self.delivery.close()  # waits a little for the last events to be delivered
                self._queue_started = False
            await self.moderation.close()
            await self.modlog.close()
            for unsubscribe in (self._unsubscribe, self._unsubscribe_metrics):
                if unsubscribe is not None:
                    unsubscribe()
            await self.preferences.close()
        await super().close()

    async def _on_tree_error(self, interaction: discord.Interaction,
                             error: discord.app_commands.AppCommandError) -> None:
        """A bug in a command: log it, and tell the person alone something short instead of 'failed'.

        After a public defer, a followup would fill the public "thinking" message: remove it and
        answer ephemerally, as refusals do."""
        if isinstance(error, discord.app_commands.CheckFailure):
            text = str(error) or "you cannot use this here"
        else:
            log.error("command %s failed", getattr(interaction.command, "name", "?"), exc_info=error)
            text = "something went wrong on my side; please try again later"
        await replies.refuse(interaction, text)

    async def on_message(self, message: discord.Message) -> None:
        """No prefix commands: messages are handled by the gestures cog's listener."""

    async def on_ready(self) -> None:
        log.info("logged in as %s (%s) in %d guilds", self.user, getattr(self.user, "id", "?"), len(self.guilds))

    def user_name(self, user_id: str) -> str:
        """A user id as people know them, when discord.py has them cached (the gallery's pages)."""
        user = self.get_user(int(user_id)) if user_id.isdigit() else None
        return user.display_name if user is not None else user_id

    def connected(self) -> bool:
        """Whether the gateway session is up now. ``is_ready`` stays true through a disconnection
        (discord.py keeps reconnecting), so the websocket itself is asked: open, and its latency
        measured (finite)."""
        ws = self.ws
        return (self.is_ready() and not self.is_closed() and ws is not None and ws.open
                and math.isfinite(self.latency))

    async def _beat(self) -> None:
        """Touch the heartbeat file while the gateway session is up (not while discord.py tries to
        reconnect); the container healthcheck reads its age."""
        path = self.cfg.discord.heartbeat_path
        await self.wait_until_ready()
        while True:
            if self.connected():
                try:
                    path.write_text(f"{time.time():.0f}\n")
                except OSError as e:
                    log.warning("cannot write %s: %s", path, e)
            await asyncio.sleep(self.cfg.discord.heartbeat_s)

    # ------------------------------------------------------------------ command sync

    def command_payload(self) -> dict[str, Any]:
        """The JSON that a sync would send, per target (global or each configured guild)."""
        guilds = self.cfg.discord.guilds
        out: dict[str, Any] = {"application_id": self.application_id}
        if guilds:
            for g in guilds:
                self.tree.copy_global_to(guild=discord.Object(g))
                out[str(g)] = [c.to_dict(self.tree) for c in self.tree.get_commands(guild=discord.Object(g))]
        else:
            out["global"] = [c.to_dict(self.tree) for c in self.tree.get_commands()]
        return out

    async def sync_if_changed(self) -> bool:
        """Sync the command tree unless its hash matches the last successful sync; never raises."""
        payload = self.command_payload()
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        hash_file: Path = self.cfg.discord.data_path / SYNC_HASH_FILE
        try:
            if hash_file.read_text().strip() == digest:
                log.info("application commands unchanged; not syncing")
                return False
        except OSError:
            pass
        try:
            if self.cfg.discord.guilds:
                for g in self.cfg.discord.guilds:
                    await self.tree.sync(guild=discord.Object(g))
            else:
                await self.tree.sync()
        except discord.HTTPException as e:
            log.error("syncing application commands failed (%s %s); will retry next start", e.status, e.text)
            return False
        hash_file.write_text(digest + "\n")
        log.info("application commands synced to %s", self.cfg.discord.guilds or "all guilds (global)")
        return True
