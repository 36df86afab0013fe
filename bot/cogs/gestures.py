"""Talking to the bot without slash commands: replies, mentions, reactions, a context menu.

* reply with words to a message that carries an image (or to a reply chain leading to one)
  -> edit that image with the words as the prompt; ``jacket -> fur`` changes only the jacket;
* attach an image + words while replying or mentioning the bot -> edit the attached image;
* several images in one message -> a collage of them, left to right, seams repainted;
* react with the rerun emoji on a result -> the same request with a new seed;
* react with the vary emoji on a result -> a variation: its own picture, a new seed, fewer steps;
* react with the cancel emoji on a job's status message -> cancel it (owner or moderator);
* right-click a message -> Apps -> "Edit with VQGAN" -> a modal asks for the prompt.

Which job a reaction means comes from the job store (``queue.find``), so gestures on messages
posted before a restart keep working.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot import personal, replies, submit
from bot.access import check_access, check_access_interaction, check_access_message, moderates
from bot.delivery import Sendable
from bot.editing import MAX_PIECES, again, piece_name, prepare, split_arrow
from bot.inputs import build_request, job_fields, read_prompt
from bot.modlog import Asker
from bot.pending import check_pending
from bot.uploads import ImageRef, check_attachment, image_attachments
from engine import Job, Request, UserError

if TYPE_CHECKING:
    from bot.app import VQGANBot

log = logging.getLogger(__name__)
MAX_CHAIN = 5  # replies followed to find an image
RESULT_RECORDED_S = 3.0  # how long a reaction on a just-posted result waits for the result to be recorded
HOWTO = ("to edit an image, reply to it with words saying what it should become, "
         "e.g. `a snowy mountain at dusk`, or `jacket -> a fur coat` to change one part (or use /edit)")


def _norm(emoji: str) -> str:
    return emoji.replace("\ufe0f", "")


FORM = "vqgan:form:"
"""A form's custom_id: ``FORM`` + the id of the message whose picture it edits. Discord sends a form's
answer to whoever is running then, and discord.py keeps forms in memory only, so the answers are read
by ``Gestures.on_interaction`` from the custom_id alone: a form opened before a restart still works after it."""


class EditForm(discord.ui.Modal):
    """Asks for the words (and, from the Edit button, optionally the one part to change)."""

    prompt: discord.ui.TextInput[EditForm] = discord.ui.TextInput(
        label="What should it become?", placeholder="a snowy mountain at dusk", max_length=1000,
        custom_id="prompt")

    def __init__(self, target: discord.Message, title: str, *, region: bool = False) -> None:
        super().__init__(title=title, custom_id=f"{FORM}{target.id}", timeout=None)
        if region:
            self.add_item(discord.ui.TextInput(label="Only this part (optional)", placeholder="e.g. the sky",
                                               required=False, max_length=200, custom_id="region"))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Answered by ``Gestures.on_interaction``, the same way before and after a restart."""
        self.stop()


async def edit_fields(bot: VQGANBot, text: str, *, user: int, guild: int | None,
                      region: str | None = None) -> personal.Personalised:
    """Each job's fields from an edit's words: the parameters at their end, a sweep, and (without a
    ``region``) ``a -> b`` as the region and what it becomes; the asker's (``user`` on server ``guild``)
    /settings give the models and a suffix; each request checked. Raises ``UserError``."""
    wanted = await job_fields(bot.cfg, read_prompt(bot.cfg, text), {"region": region}, user=user, guild=guild,
                              styles=bot.styles)
    for fields in wanted:
        if region is None:
            fields["region"], fields["prompt"] = split_arrow(fields["prompt"])
    mine = await personal.personalise(bot.preferences, bot.cfg, wanted, user=user, guild=guild,
                                      kinds=personal.PAINTING_KINDS, timelapse=False)
    for fields in mine.jobs:
        build_request(bot.cfg, kind="edit", **fields)
    return mine


async def edit_requests(bot: VQGANBot, target: discord.Message, atts: list[discord.Attachment],
                        mine: personal.Personalised) -> tuple[list[Request], str | None]:
    """Download and compose the pictures once for every job; the parent is the job whose result
    ``target`` shows."""
    edit = await prepare(bot, bot.cfg, [ImageRef.of(a) for a in atts])
    parent = bot.queue.find(result_message_id=target.id)
    reqs = [build_request(bot.cfg, kind="edit", **{**edit.fields(), **fields}, parent=parent.id if parent else None)
            for fields in mine.jobs]
    return reqs, personal.notes(edit.note, mine.note)


async def edit_from_modal(bot: VQGANBot, interaction: discord.Interaction, target: discord.Message,
                          atts: list[discord.Attachment], text: str, region: str | None = None) -> None:
    """A modal's words (and optional region) edit ``target``'s picture(s): the context menu's and the
    Edit button's form. Without a region, ``a -> b`` in the words is one, as in a reply."""
    text = " ".join(text.split())
    region = " ".join((region or "").split()) or None
    owner = str(interaction.user.id)
    try:
        wanted = await edit_fields(bot, text, user=interaction.user.id, guild=interaction.guild_id, region=region)
        check_pending(bot.cfg, bot.queue, owner, bot.preparing, adding=len(wanted.jobs))  # again: time passed
        for fields in wanted.jobs:
            bot.moderation.check(Asker.of(interaction), fields["prompt"], fields.get("region"))
    except UserError as e:
        await replies.refuse(interaction, e)
        return
    with bot.preparing.hold(owner, len(wanted.jobs)) as release:  # right after the check: no await between
        await interaction.response.defer(thinking=True)
        try:
            reqs, note = await edit_requests(bot, target, atts, wanted)
        except UserError as e:
            await replies.refuse(interaction, e)
            return
        await submit.all_from_interaction(bot, interaction, reqs, note=note, release=release)


class Gestures(commands.Cog):
    """Replies, mentions, reactions and the message context menu."""

    def __init__(self, bot: VQGANBot) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Edit with VQGAN", callback=self.edit_menu)
        self._warned_content = False

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    async def _notice(self, where: discord.Message | discord.PartialMessage, reason: str | UserError,
                      prefix: str = "") -> None:
        """A self-deleting reply; a ``UserError`` counts as a refusal of its kind (``replies.counted``)."""
        text = replies.counted(self.bot, reason, None)
        await replies.notice(where, prefix + text, self.bot.cfg.discord.notice_delete_after_s)

    # ------------------------------------------------------------------ messages

    def _prompt_text(self, message: discord.Message) -> str:
        """The message's words without mentions of the bot."""
        me = self.bot.user
        text = message.content or ""
        if me is not None:
            text = re.sub(rf"<@!?{me.id}>", " ", text)
        return " ".join(text.split())

    async def _resolve(self, message: discord.Message) -> discord.Message | None:
        """The message this one replies to (fetched when not cached)."""
        ref = message.reference
        if ref is None or ref.message_id is None:
            return None
        if isinstance(ref.resolved, discord.Message):
            return ref.resolved
        try:
            channel = message.channel if ref.channel_id == message.channel.id else self.bot.get_partial_messageable(
                ref.channel_id)
            return await channel.fetch_message(ref.message_id)
        except discord.HTTPException:
            return None

    async def _nearest_image(self, message: discord.Message) -> discord.Message | None:
        """Follow the reply chain up from ``message`` to the nearest message with an image."""
        current: discord.Message | None = message
        for _ in range(MAX_CHAIN):
            current = await self._resolve(current) if current is not None else None
            if current is None:
                return None
            if image_attachments(current):
                return current
        return None

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        try:
            await self._on_message(message)
        except Exception:
            log.exception("gesture on message %s failed", message.id)

    async def _on_message(self, message: discord.Message) -> None:
        me = self.bot.user
        if message.author.bot or me is None or message.type not in (discord.MessageType.default,
                                                                     discord.MessageType.reply):
            return
        replying = message.reference is not None and message.reference.message_id is not None
        mentioned = me in message.mentions or bool(re.search(rf"<@!?{me.id}>", message.content or ""))
        if not replying and not mentioned:
            return
        resolved = message.reference.resolved if replying and message.reference else None
        to_me = isinstance(resolved, discord.Message) and resolved.author.id == me.id
        try:
            check_access_message(self.bot.cfg, message)
        except UserError as e:
            if mentioned or to_me:  # in a channel the bot stays out of, only answer who asked it
                await self._notice(message, e)
            return
        text = self._prompt_text(message)
        own = image_attachments(message)
        target: discord.Message | None = message if own else None
        if target is None and replying:
            replied = await self._resolve(message)
            target = replied if replied is not None and image_attachments(replied) else None
            if target is None and replied is not None and replied.reference:
                target = await self._nearest_image(replied)
        if target is None:
            if mentioned:
                await self._notice(message, HOWTO)
            return
        if not text:
            if own:  # an image and no words: say how it works
                await self._notice(message, HOWTO)
            elif not message.attachments and not message.stickers:
                self._warn_no_content()
            return
        await self._edit(message, target, image_attachments(target), text)

    async def _edit(self, message: discord.Message, target: discord.Message, atts: list[discord.Attachment],
                    text: str) -> None:
        """Edit ``target``'s image(s): one picture, or several as a collage; ``a -> b`` is a region edit."""
        cfg = self.bot.cfg
        owner = str(message.author.id)
        command = "reply" if message.reference is not None else "mention"
        asker = Asker(message.author.id, message.guild.id if message.guild else None, message.channel.id, command)
        try:
            wanted = await edit_fields(self.bot, text, user=message.author.id,
                                       guild=message.guild.id if message.guild else None)
            check_pending(cfg, self.bot.queue, owner, self.bot.preparing, adding=len(wanted.jobs))
            for fields in wanted.jobs:
                self.bot.moderation.check(asker, fields["prompt"], fields.get("region"))
        except UserError as e:
            await self._notice(message, e)
            return
        with self.bot.preparing.hold(owner, len(wanted.jobs)) as release:  # right after the check: no await between
            try:
                reqs, note = await edit_requests(self.bot, target, atts, wanted)
            except UserError as e:
                await self._notice(message, e)
                return
            await submit.all_from_message(self.bot, message, reqs, owner=message.author.id, member=message.author,
                                          note=note, release=release, command=command)

    def _warn_no_content(self) -> None:
        """A reply with no words, files or stickers cannot be sent: the content intent is off."""
        if not self._warned_content:
            self._warned_content = True
            log.warning("replies arrive without text: enable the Message Content intent "
                        "(Developer Portal -> Bot -> Privileged Gateway Intents)")

    # ------------------------------------------------------------------ reactions

    @commands.Cog.listener()
    async def on_raw_reaction_add(self, payload: discord.RawReactionActionEvent) -> None:
        try:
            await self._on_reaction(payload)
        except Exception:
            log.exception("gesture on reaction %s to %s failed", payload.emoji, payload.message_id)

    async def _on_reaction(self, payload: discord.RawReactionActionEvent) -> None:
        me = self.bot.user
        if me is None or payload.user_id == me.id:
            return
        emoji = _norm(str(payload.emoji))
        d = self.bot.cfg.discord
        if emoji in (_norm(d.rerun_emoji), _norm(d.vary_emoji)):
            job = await self._result_job(payload, me.id)
            if job is not None and emoji == _norm(d.rerun_emoji):
                await self._rerun(payload, job)
            elif job is not None:
                await self._vary(payload, job)
        elif emoji == _norm(d.cancel_emoji):
            job = (self.bot.queue.find(status_message_id=payload.message_id)
                   or self.bot.queue.find(progress_message_id=payload.message_id))
            if job is not None:
                await self._cancel(payload, job)

    async def _result_job(self, payload: discord.RawReactionActionEvent, me: int) -> Job | None:
        """The job whose result the reaction is on. A result is posted before it is recorded, and a
        reaction can arrive in between (the gateway may show the message before the post returns):
        on the bot's own message, look again for a moment before ignoring the reaction."""
        job = self.bot.queue.find(result_message_id=payload.message_id)
        if job is not None or payload.message_author_id != me:
            return job
        loop = asyncio.get_running_loop()
        deadline = loop.time() + RESULT_RECORDED_S
        while job is None and loop.time() < deadline:
            await asyncio.sleep(0.05)
            job = self.bot.queue.find(result_message_id=payload.message_id)
        return job

    def _anchor(self, payload: discord.RawReactionActionEvent) -> discord.PartialMessage:
        channel = self.bot.get_channel(payload.channel_id)
        if not isinstance(channel, Sendable):  # not cached, or a kind that holds no messages
            return self.bot.get_partial_messageable(payload.channel_id, guild_id=payload.guild_id).get_partial_message(
                payload.message_id)
        return channel.get_partial_message(payload.message_id)

    async def _rerun(self, payload: discord.RawReactionActionEvent, job: Job) -> None:
        await self._from_result(payload, job, "rerun")

    async def _vary(self, payload: discord.RawReactionActionEvent, job: Job) -> None:
        await self._from_result(payload, job, "vary")

    async def _from_result(self, payload: discord.RawReactionActionEvent, job: Job,
                           how: Literal["rerun", "vary"]) -> None:
        """A new job from a reaction on a result, owned by the reactor, posted beside the result."""
        cfg = self.bot.cfg
        anchor = self._anchor(payload)
        channel = self.bot.get_channel(payload.channel_id)
        try:
            check_access(cfg, guild_id=payload.guild_id, channel_id=payload.channel_id,
                         parent_id=getattr(channel, "parent_id", None), member=payload.member)
            check_pending(cfg, self.bot.queue, str(payload.user_id), self.bot.preparing)
            req, note, source = again(cfg, job, how)
        except UserError as e:
            await self._notice(anchor, e, f"<@{payload.user_id}> ")
            return
        await submit.from_message(self.bot, anchor, req, owner=payload.user_id, member=payload.member,
                                  note=note, source=source, command=f"{payload.emoji} reaction")

    async def _cancel(self, payload: discord.RawReactionActionEvent, job: Job) -> None:
        moderator = moderates(self.bot.cfg, payload.member, payload.guild_id, job)
        try:
            await self.bot.queue.cancel(job.id, by=str(payload.user_id), moderator=moderator)
        except (UserError, KeyError) as e:
            log.info("reaction cancel of %s by %s refused: %s", job.id, payload.user_id, e)
            try:  # take the stranger's reaction off, so that it does not look as if it worked
                await self._anchor(payload).remove_reaction(payload.emoji, discord.Object(payload.user_id))
            except discord.HTTPException:
                pass

    # ------------------------------------------------------------------ context menu

    async def edit_menu(self, interaction: discord.Interaction, message: discord.Message) -> None:
        cfg = self.bot.cfg
        images = image_attachments(message)
        try:
            check_access_interaction(cfg, interaction)
            if not images:
                raise UserError("that message has no image to edit; attach one or pick another message")
            check_pending(cfg, self.bot.queue, str(interaction.user.id), self.bot.preparing)
            shown = images[:MAX_PIECES]  # the rest are left out of the collage (and the note says so)
            for i, a in enumerate(shown):
                check_attachment(cfg, ImageRef.of(a), piece_name(i, len(shown)))
        except UserError as e:
            await replies.refuse(interaction, e)
            return
        await interaction.response.send_modal(EditForm(message, "Edit with VQGAN"))

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """The answer to an ``EditForm``: edit the picture of the message its custom_id names."""
        data: dict[str, Any] = dict(interaction.data or {})
        custom_id = str(data.get("custom_id", ""))
        if interaction.type is not discord.InteractionType.modal_submit or not custom_id.startswith(FORM):
            return
        values = {str(c.get("custom_id")): str(c.get("value") or "")
                  for row in data.get("components", []) for c in row.get("components", [])}
        try:
            check_access_interaction(self.bot.cfg, interaction)
            channel = interaction.channel
            if not isinstance(channel, discord.abc.Messageable):
                raise UserError("I cannot read that channel any more")
            try:
                target = await channel.fetch_message(int(custom_id.removeprefix(FORM)))
            except (ValueError, discord.NotFound):
                raise UserError("that message is gone; nothing to edit") from None
            except discord.HTTPException as e:
                raise UserError(f"Discord did not let me read that message ({e.status}); try again") from None
            images = image_attachments(target)
            if not images:
                raise UserError("that message has no picture left to edit")
        except UserError as e:
            await replies.refuse(interaction, e)
            return
        await edit_from_modal(self.bot, interaction, target, images, values.get("prompt", ""),
                              values.get("region") or None)


async def setup(bot: VQGANBot) -> None:
    await bot.add_cog(Gestures(bot))
