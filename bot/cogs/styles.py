"""/style save, /style list, /style delete: named prompt endings, one's own or a server's.

A style's name is one person's wherever they paint; a server's moderators (``bot.access.is_moderator``)
may save server styles (``server:True``) that everyone on that server sees, and one's own style wins
over a server style of the same name. ``/imagine style:NAME`` (and a prompt's ``--style NAME``) adds
the text (``bot.personal.resolve_style``). Every answer is private.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import limits, replies
from bot.access import check_access_interaction, is_moderator
from bot.inputs import build_request
from bot.texts import short_prompt
from engine import MAX_STYLE_NAME, Style, UserError, new_style, quoted, with_style

if TYPE_CHECKING:
    from bot.app import VQGANBot

log = logging.getLogger(__name__)


def _line(style: Style, shadowed: bool = False) -> str:
    mark = " *(yours wins)*" if shadowed else ""
    return f"• `{style.name}` · {short_prompt(style.text, 160)}{mark}"


class Styles(commands.GroupCog, group_name="style", group_description="Named prompt endings: save, list, delete"):
    """Each person's styles, and their server's."""

    def __init__(self, bot: VQGANBot) -> None:
        self.bot = bot

    def _server(self, interaction: discord.Interaction, server: bool) -> int | None:
        """The server a ``server:True`` style belongs to; refused unless the asker moderates it."""
        if not server:
            return None
        if interaction.guild_id is None:
            raise UserError("server styles are made in a server, not in direct messages")
        if not is_moderator(self.bot.cfg, interaction.user, interaction.guild_id):
            raise UserError("only this server's moderators can save or delete server styles; "
                            "leave out server: to make one of your own")
        return interaction.guild_id

    @app_commands.command(name="save", description="Save words to add to prompts: /imagine style:NAME")
    @app_commands.describe(name=f"A short name, e.g. oil (at most {MAX_STYLE_NAME} letters, digits, - or _)",
                           text="The words it adds, e.g. 'oil painting, dramatic lighting'",
                           server="A style for everyone on this server (moderators only)")
    async def save(self, interaction: discord.Interaction, name: str, text: str, server: bool = False) -> None:
        cfg = self.bot.cfg
        try:
            check_access_interaction(cfg, interaction)
            guild = self._server(interaction, server)
            style = new_style(name, text, owner=interaction.user.id, guild=guild, max_chars=cfg.limits.max_prompt_chars)
            build_request(cfg, prompt=with_style("a test", style.text))  # its words as a prompt takes them
            replaced = await self.bot.preferences.save_style(style, max_styles=cfg.discord.max_styles)
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        whose = "this server's" if guild is not None else "your"
        verb = "replaced" if replaced else "saved"
        await interaction.response.send_message(
            limits.fit(f"✅ {verb} {whose} style `{style.name}`: {short_prompt(style.text, 300)}\n"
                       f"Use it with `/imagine style:{style.name}` or `--style {style.name}` in a prompt."),
            ephemeral=True, allowed_mentions=replies.QUIET)

    @app_commands.command(name="list", description="Your styles and this server's")
    async def list_cmd(self, interaction: discord.Interaction) -> None:
        try:
            check_access_interaction(self.bot.cfg, interaction)
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        own, server = await self.bot.preferences.styles(interaction.user.id, interaction.guild_id)
        mine = {s.name for s in own}
        text = "**Your styles**\n" + ("\n".join(map(_line, own)) if own else "none yet: `/style save NAME TEXT`")
        if interaction.guild_id is not None:
            text += "\n\n**This server's styles**\n" + (
                "\n".join(_line(s, s.name in mine) for s in server) if server else "none")
        first, *more = limits.split(text)
        await interaction.response.send_message(first, ephemeral=True, allowed_mentions=replies.QUIET)
        for piece in more:
            await interaction.followup.send(piece, ephemeral=True, allowed_mentions=replies.QUIET)

    @app_commands.command(name="delete", description="Delete one of your styles")
    @app_commands.describe(name="The style's name", server="Delete this server's style of that name (moderators)")
    async def delete(self, interaction: discord.Interaction, name: str, server: bool = False) -> None:
        try:
            check_access_interaction(self.bot.cfg, interaction)
            guild = self._server(interaction, server)
            if not await self.bot.preferences.delete_style(name, user=interaction.user.id, guild=guild):
                whose = "this server has" if guild is not None else "you have"
                raise UserError(f"{whose} no style {quoted(name)}; /style list shows them")
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        await interaction.response.send_message(f"🗑️ deleted the style `{name.strip().casefold()}`", ephemeral=True,
                                                allowed_mentions=replies.QUIET)

    @delete.autocomplete("name")
    async def _names(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        own, server = await self.bot.preferences.styles(interaction.user.id, interaction.guild_id)
        names = [s.name for s in own] + [s.name for s in server if s.name not in {o.name for o in own}]
        return [app_commands.Choice(name=n, value=n) for n in names if current.casefold() in n][:25]


async def setup(bot: VQGANBot) -> None:
    await bot.add_cog(Styles(bot))
