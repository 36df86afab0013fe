"""/moderation ban, unban and list: a server's moderators keep its banned words (``bot.moderation``).

Moderators are the ones ``bot.access.is_moderator`` names (the server's Administrators and
``[discord] moderator_roles``); anybody else gets one private line. Every answer is private. The list
is one message; when it would not fit, the message says how many entries there are and the whole list
comes as a text file with it.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import limits, replies
from bot.access import is_moderator
from bot.moderation import MAX_ENTRY_CHARS
from bot.modlog import Asker, shown_rule
from bot.wordfilter import Rule
from engine import UserError

if TYPE_CHECKING:
    from bot.app import VQGANBot

log = logging.getLogger(__name__)
LIST_FILE = "banned.txt"


class ModerationCommands(commands.Cog):
    """The banned list of a server, for its moderators."""

    group = app_commands.Group(name="moderation", description="The words this server does not allow in prompts",
                               guild_only=True)

    def __init__(self, bot: VQGANBot) -> None:
        self.bot = bot

    def _moderator(self, interaction: discord.Interaction) -> Asker:
        """The asker, when a moderator of this server; else a ``UserError``."""
        d = self.bot.cfg.discord
        if interaction.guild_id is None or (d.allowed_guilds and interaction.guild_id not in d.allowed_guilds):
            raise UserError("I am not enabled in this server")
        if not is_moderator(self.bot.cfg, interaction.user, interaction.guild_id):
            raise UserError("only this server's moderators can change or see its banned words")
        return Asker.of(interaction)

    async def _answer(self, interaction: discord.Interaction, text: str) -> None:
        await interaction.response.send_message(limits.fit(text), ephemeral=True, allowed_mentions=replies.QUIET)

    @group.command(name="ban", description="Refuse prompts with this word (or a re:regular expression)")
    @app_commands.describe(word="A word or words, matched whole and in any case, or re:PATTERN")
    async def ban(self, interaction: discord.Interaction,
                  word: app_commands.Range[str, 1, MAX_ENTRY_CHARS]) -> None:
        try:
            text = await self.bot.moderation.ban(self._moderator(interaction), word)
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        await self._answer(interaction, f"🛡️ {text}")

    @group.command(name="unban", description="Allow a word this server's moderators banned")
    @app_commands.describe(word="The entry as /moderation list shows it")
    async def unban(self, interaction: discord.Interaction,
                    word: app_commands.Range[str, 1, MAX_ENTRY_CHARS]) -> None:
        try:
            text = await self.bot.moderation.unban(self._moderator(interaction), word)
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        await self._answer(interaction, f"🛡️ {text}")

    @group.command(name="list", description="The words and rules this server does not allow")
    async def list_cmd(self, interaction: discord.Interaction) -> None:
        try:
            asker = self._moderator(interaction)
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        mine, config = self.bot.moderation.entries(asker.guild_id)
        text = listing(mine, config)
        if limits.length(text) <= limits.CONTENT:
            await self._answer(interaction, text)
            return
        whole = "\n".join([f"# banned by this server's moderators ({len(mine)})", *mine, "",
                           f"# banned by the bot's config ({len(config)})", *config, ""])
        await interaction.response.send_message(
            f"**Banned here**: {len(mine)} by this server's moderators, {len(config)} by the bot's config; "
            f"the whole list is in `{LIST_FILE}`, one entry a line",
            file=discord.File(io.BytesIO(whole.encode()), filename=LIST_FILE), ephemeral=True,
            allowed_mentions=replies.QUIET)


def listing(mine: list[str], config: list[str]) -> str:
    """The list as one message (which may be too long for one: then it goes as a file)."""
    if not mine and not config:
        return "nothing is banned on this server; `/moderation ban WORD` adds a word"
    parts = []
    if mine:
        parts.append(f"**Banned by this server's moderators** ({len(mine)}; `/moderation unban` lifts one)\n"
                     + " · ".join(shown_rule(Rule(e)) for e in mine))
    if config:
        parts.append(f"**Banned by the bot's config** ({len(config)})\n"
                     + " · ".join(shown_rule(Rule(e)) for e in config))
    return "\n\n".join(parts)


async def setup(bot: VQGANBot) -> None:
    await bot.add_cog(ModerationCommands(bot))
