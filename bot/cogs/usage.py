"""/usage: a person's GPU time today, what is left, and when it starts again (only they see it).

The queue counts it (``engine.jobs.quota``: ``[limits] daily_gpu_seconds`` per UTC day); over it, new
jobs wait in the relax lane, or are refused with ``[limits] relax = false``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import replies
from bot.access import check_access_interaction, is_moderator
from engine import UserError, format_seconds

if TYPE_CHECKING:
    from bot.app import VQGANBot
    from engine import Usage


def usage_text(u: Usage, relax: bool, exempt: bool) -> str:
    """What /usage says: used, left, the reset as a Discord timestamp (shown in the reader's time zone);
    ``relax``: ``[limits] relax``, what happens over it; ``exempt``: a moderator not held to it."""
    reset = int(u.resets_at)
    lines = [f"**Your GPU time today** (UTC day {u.day})"]
    if u.left_s is None:
        lines.append(f"used: {format_seconds(u.used_s)} · no daily limit here")
    else:
        lines.append(f"used: {format_seconds(u.used_s)} of {format_seconds(u.limit_s)} · "
                     f"left: {format_seconds(u.left_s)}")
    lines.append(f"resets <t:{reset}:R> (midnight UTC, <t:{reset}:t> your time)")
    if exempt and u.left_s is not None:
        lines.append("as a moderator you are not held to it")
    elif u.over:
        lines.append("🐢 new jobs wait in the relax lane until then: they run when no other job waits"
                     if relax else "new jobs are refused until then")
    return "\n".join(lines)


class UsageCommands(commands.Cog):
    """/usage: one's own GPU time today."""

    def __init__(self, bot: VQGANBot) -> None:
        self.bot = bot

    @app_commands.command(name="usage", description="Your GPU time today: used, left, and when it resets")
    async def usage_cmd(self, interaction: discord.Interaction) -> None:
        cfg = self.bot.cfg
        try:
            check_access_interaction(cfg, interaction)
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        exempt = cfg.limits.moderators_exempt and is_moderator(cfg, interaction.user, interaction.guild_id)
        text = usage_text(self.bot.queue.quota.usage(str(interaction.user.id)), cfg.limits.relax, exempt)
        await interaction.response.send_message(text, ephemeral=True, allowed_mentions=replies.QUIET)


async def setup(bot: VQGANBot) -> None:
    await bot.add_cog(UsageCommands(bot))
