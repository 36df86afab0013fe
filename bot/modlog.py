"""The moderation log channel (``[moderation] log_channel``): one line per accepted request, refusal
and change of the banned list.

An accepted request's line names the person, the command, the channel, the job id, the prompt, and
links to the job's status message, posted at acceptance: the thread that holds the progress and the
result hangs on it (or the result replies to it, where no thread could be opened). A refusal's line
names the person, the command, the channel and the rule that matched (and where it comes from), not
the prompt: the bot's own log file has that. Lines are posted in the background: a slow, deleted or
unwritable channel is a warning in the log (once, until it works again), never a failed or delayed job.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands

from bot.config import BotConfig
from bot.limits import CONTENT, fit
from bot.replies import QUIET
from bot.texts import short_prompt

if TYPE_CHECKING:
    from bot.wordfilter import Rule
    from engine import Job

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 2.0  # at close, how long lines still being posted get
RULE_CHARS = 100  # a rule shown in a line is cut to this


@dataclass(frozen=True)
class Asker:
    """Who asked for a painting, where, and with what (``/imagine``, ``reply``, ``rerun button``, ...)."""

    user_id: int
    guild_id: int | None
    channel_id: int | None
    command: str

    @classmethod
    def of(cls, interaction: discord.Interaction) -> Asker:
        return cls(interaction.user.id, interaction.guild_id, interaction.channel_id, command_name(interaction))


def command_name(interaction: discord.Interaction) -> str:
    """How a line names what an interaction was: a slash command, the context menu, a button, a form."""
    cmd = interaction.command
    if isinstance(cmd, app_commands.ContextMenu):
        return f"“{cmd.name}”"
    if cmd is not None:
        return f"/{cmd.qualified_name}"
    if interaction.type is discord.InteractionType.component:
        data: dict[str, Any] = dict(interaction.data or {})
        parts = str(data.get("custom_id", "")).split(":")  # vqgan:<action>:<job>
        return f"{parts[1]} button" if len(parts) == 3 else "button"
    if interaction.type is discord.InteractionType.modal_submit:
        return "edit form"
    return "interaction"


def _where(a: Asker) -> str:
    return f"<@{a.user_id}> · {a.command} · " + (f"<#{a.channel_id}>" if a.guild_id is not None else "a DM")


def shown_rule(rule: Rule) -> str:
    """A rule as a line shows it: in code quotes (its own backticks turned into quotes), cut short."""
    return f"`{fit(rule.entry.replace('`', chr(0x2CB)), RULE_CHARS)}`"


class ModLog:
    """Posts the lines to the channel ``[moderation]`` names for the request's server."""

    def __init__(self, client: discord.Client, cfg: BotConfig) -> None:
        self.client = client
        self.cfg = cfg
        self._tasks: set[asyncio.Task[None]] = set()
        self._broken: set[int] = set()  # channels whose last post failed (warned once)

    def accepted(self, asker: Asker, job: Job, link: str | None) -> None:
        r = job.request
        words = discord.utils.escape_markdown(" ".join(r.prompt.split()))
        region = f" · only *{discord.utils.escape_markdown(short_prompt(r.region, 80))}*" if r.region else ""
        head = f"✅ {_where(asker)} · job `{job.id}`{region} · {link or 'no status message'}"
        self._post(asker.guild_id, f"{head}\n> {words}")

    def refused(self, asker: Asker, rule: Rule) -> None:
        self._post(asker.guild_id, f"🚫 {_where(asker)} · refused: {rule.kind} {shown_rule(rule)} ({rule.source})")

    def changed(self, asker: Asker, what: str, rule: Rule) -> None:
        """A moderator's ``ban`` or ``unban``."""
        self._post(asker.guild_id, f"🛡️ {_where(asker)} · {what} {shown_rule(rule)}")

    def _post(self, guild_id: int | None, line: str) -> None:
        channel = self.cfg.moderation.log_channel_for(guild_id)
        if channel is not None:
            self._spawn(self._send(channel, fit(line, CONTENT)))

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="modlog")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, channel_id: int, line: str) -> None:
        try:
            await self.client.get_partial_messageable(channel_id).send(line, allowed_mentions=QUIET)
        except discord.HTTPException as e:
            if channel_id not in self._broken:
                self._broken.add(channel_id)
                log.warning("cannot post to the moderation log channel %s (%s %s); requests go on without "
                            "their log lines until it works again ([moderation] log_channel)",
                            channel_id, e.status, e.text or type(e).__name__)
            return
        except Exception:
            log.exception("posting to the moderation log channel %s failed", channel_id)
            return
        self._broken.discard(channel_id)

    async def close(self) -> None:
        """Give the lines still being posted a moment, then drop them."""
        if self._tasks:
            _, late = await asyncio.wait(set(self._tasks), timeout=CLOSE_WAIT_S)
            for task in late:
                task.cancel()
