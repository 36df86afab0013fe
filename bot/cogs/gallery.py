"""/gallery: a private, signed, expiring link to a web page of the asker's results.

Moderators of the server it is typed in also get that server's page and its status page (queue, lanes,
workers, today's usage). Links are made by ``bot.web.links`` and shown to the asker alone.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import replies
from bot.access import check_access_interaction, is_moderator
from bot.web.links import url
from engine import UserError

if TYPE_CHECKING:
    from bot.app import VQGANBot

DISABLED = "the gallery is not enabled on this bot"


class GalleryCommands(commands.Cog):
    """/gallery."""

    def __init__(self, bot: VQGANBot) -> None:
        self.bot = bot

    @app_commands.command(name="gallery", description="A private link to a web page of your pictures")
    async def gallery_cmd(self, interaction: discord.Interaction) -> None:
        cfg, gallery = self.bot.cfg, self.bot.gallery
        if gallery is None:  # [gallery] enabled = false
            await interaction.response.send_message(f"ℹ️ {DISABLED}", ephemeral=True)
            return
        try:
            check_access_interaction(cfg, interaction)
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        links = gallery.links
        base = cfg.gallery_url()
        mine, expires = links.token("u", interaction.user.id)
        lines = [f"🖼️ your pictures: <{url(base, mine)}>"]
        guild = interaction.guild_id
        if guild is not None and is_moderator(cfg, interaction.user, guild):
            lines.append(f"🗂️ this server's pictures: <{url(base, links.token('g', guild)[0])}>")
            lines.append(f"📊 this server's status: <{url(base, links.token('s', guild)[0])}>")
        lines.append(f"-# only for you; the links stop working <t:{expires}:R>")
        await interaction.response.send_message("\n".join(lines), ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())


async def setup(bot: VQGANBot) -> None:
    await bot.add_cog(GalleryCommands(bot))
