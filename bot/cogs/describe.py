"""/describe and the message context menu "Describe": prompts that describe a picture, each with a button
that paints it.

Describing runs CLIP (``engine.Describer``, seconds of work), so it runs in a thread, never on the event
loop, one picture at a time; at most ``MAX_WAITING`` wait their turn and more are refused. With
``queue.backend = "redis"`` the models live in the worker processes, not in the bot: the bot has no
describer then, and /describe says so in one line.

A Paint button (``bot.suggestions.PaintButton``) reads its prompt back from the answer it is under and
queues it as an /imagine job of the presser's, through the same checks and submit path as /imagine.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot import replies, submit
from bot.access import check_access_interaction
from bot.cdn import get_attachment
from bot.endpoints import cdn_url
from bot.inputs import build_request
from bot.pending import check_pending
from bot.suggestions import COG, PaintButton, paint_view, prompts_in, suggestions_text
from bot.uploads import ImageRef, check_attachment, image_attachments
from bot.views import Debounce
from engine import UserError

if TYPE_CHECKING:
    from bot.app import VQGANBot

log = logging.getLogger(__name__)

SUGGESTIONS = 4
MAX_WAITING = 8  # pictures waiting for the describer at once; more are refused (try again shortly)
NOT_HERE = ("describing pictures needs the CLIP model in the bot's process, and this bot paints on separate "
            "workers (queue.backend = \"redis\")")
BUSY = "many pictures are being described right now; please try again in a minute"


class Describe(commands.Cog, name=COG):
    """/describe, the "Describe" context menu, and the Paint buttons under their answers."""

    def __init__(self, bot: VQGANBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Describe", callback=self.describe_menu)
        self.turn = asyncio.Semaphore(1)  # one picture at a time: the describer holds one lock anyway
        self.waiting = 0
        self.debounce = Debounce()

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)
        self.bot.add_dynamic_items(PaintButton)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)
        self.bot.remove_dynamic_items(PaintButton)

    @app_commands.command(name="describe", description="Suggest prompts that describe a picture")
    @app_commands.describe(image="The picture to describe")
    async def describe(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        await self._describe(interaction, image)

    async def describe_menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        images = image_attachments(message)
        if not images:
            await replies.refuse(interaction, "that message has no image to describe; pick one with a picture")
            return
        await self._describe(interaction, images[0])

    async def _describe(self, interaction: discord.Interaction, att: discord.Attachment) -> None:
        """Checks from the payload first (a refusal is instant and private), then the answer in public."""
        cfg, describer = self.bot.cfg, self.bot.describer
        ref = ImageRef.of(att)
        try:
            check_access_interaction(cfg, interaction)
            if describer is None:
                raise UserError(NOT_HERE)
            check_attachment(cfg, ref, "image")
            if self.waiting >= MAX_WAITING:
                raise UserError(BUSY)
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        self.waiting += 1
        try:
            await interaction.response.defer(thinking=True)
            try:
                data = await get_attachment(self.bot, cdn_url(ref.url, cfg.discord), cfg.discord,
                                            cfg.limits.max_input_bytes, "image")
            except UserError:
                raise
            except Exception:
                raise UserError("I could not download the image; upload it again") from None
            async with self.turn:
                found = await asyncio.to_thread(describer.describe, data, SUGGESTIONS)
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        except Exception:
            log.exception("describing %s failed", att.filename)
            await replies.refuse(interaction, "something went wrong on my side; please try again later")
            return
        finally:
            self.waiting -= 1
        text, shown = suggestions_text([(s.prompt, s.score) for s in found])
        try:
            await interaction.edit_original_response(content=text, view=paint_view(shown),
                                                     allowed_mentions=replies.QUIET)
        except discord.HTTPException as e:
            log.warning("could not show the prompts for interaction %s (%s)", interaction.id, e.status)

    async def paint(self, interaction: discord.Interaction, number: int) -> None:
        """A Paint button: that suggestion as an /imagine job of the presser's; never raises."""
        try:
            await self._paint(interaction, number)
        except Exception:
            log.exception("painting suggestion %d failed", number)
            await replies.refuse(interaction, "something went wrong on my side; please try again later")

    async def _paint(self, interaction: discord.Interaction, number: int) -> None:
        cfg, owner = self.bot.cfg, str(interaction.user.id)
        message, me = interaction.message, self.bot.user
        try:
            check_access_interaction(cfg, interaction)
            if message is None or me is None or message.author.id != me.id:
                raise UserError("that is not one of my answers")
            prompt = prompts_in(message.content).get(number)
            if prompt is None:
                raise UserError("that prompt is no longer on the message; describe the picture again")
            check_pending(cfg, self.bot.queue, owner, self.bot.preparing)
            req = build_request(cfg, prompt=prompt, kind="imagine")
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        if not self.debounce.first(interaction.user.id, str(message.id), f"paint{number}"):
            await interaction.response.defer()  # a quick repeat: acknowledged, nothing more
            return
        with self.bot.preparing.hold(owner) as release:  # right after the check: no await between
            await interaction.response.defer(thinking=True)
            await submit.from_interaction(self.bot, interaction, req, release=release)


async def setup(bot: VQGANBot) -> None:
    await bot.add_cog(Describe(bot))
