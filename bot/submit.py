"""Put a validated request on the queue with a status message and a thread to report into.

The status message is posted (and its thread opened) before ``submit`` so that the job's origin
already names them when the queue's first event arrives; if the queue then refuses, both are
removed again and the refusal is shown to the person alone. Before anything is posted, the request's
texts go through the server's banned words once more (``bot.moderation``: this is where reruns and
variations of older results meet them); once queued, the job has its line in the log channel.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import discord

from bot.access import is_moderator, priority_for
from bot.limits import CONTENT, fit
from bot.modlog import Asker
from bot.origin import INTERACTION_TOKEN, TOKEN_EXPIRES_S, Origin
from bot.replies import MENTIONS, QUIET, counted, notice, refuse
from bot.texts import describe_request, thread_name
from engine import Job, Request, UserError

if TYPE_CHECKING:
    from bot.app import VQGANBot

log = logging.getLogger(__name__)


def _pending_text(req: Request, note: str | None = None) -> str:
    return fit(f"{describe_request(req)}\n⏳ submitting…" + (f"\n-# {note}" if note else ""), CONTENT)


async def open_thread(bot: VQGANBot, message: discord.Message, name: str) -> tuple[int | None, bool]:
    """The thread to report into and whether we created it: the message's own thread if it
    is in one, a new thread on it, or None (then results go to the channel)."""
    ch = message.channel
    if isinstance(ch, discord.Thread):
        return ch.id, False
    if message.guild is None and getattr(message, "guild_id", None) is None:
        return None, False
    try:
        thread = await message.create_thread(
            name=thread_name(name), auto_archive_duration=bot.cfg.discord.thread_archive_minutes)  # type: ignore[arg-type]
        return thread.id, True
    except discord.HTTPException as e:
        log.info("cannot open a thread on %s (%s %s); results go to the channel", message.id, e.status, e.text)
        return None, False


async def _delete_thread(bot: VQGANBot, thread_id: int | None) -> None:
    if thread_id is None:
        return
    try:
        await bot.http.delete_channel(thread_id)
    except discord.HTTPException:
        pass


async def _add_cancel(bot: VQGANBot, message: discord.Message) -> None:
    try:
        await message.add_reaction(bot.cfg.discord.cancel_emoji)
    except discord.HTTPException as e:
        log.info("could not add the cancel reaction (%s)", e.status)


def _guild_id(anchor: discord.Message | discord.PartialMessage,
              member: discord.Member | discord.User | None) -> int | None:
    """The server a gesture was made in: its job belongs there (/queue, moderators). A partial message
    of an uncached channel has no guild, but the reacting member and the channel still know it."""
    for guild in (getattr(anchor, "guild", None), getattr(member, "guild", None)):
        if guild is not None:
            return int(guild.id)
    gid = getattr(anchor.channel, "guild_id", None)
    return int(gid) if gid is not None else None


def _submitted(release: Callable[[], None] | None) -> None:
    if release is not None:
        release()


async def from_interaction(bot: VQGANBot, interaction: discord.Interaction, req: Request,
                           note: str | None = None, release: Callable[[], None] | None = None, *,
                           source: Origin | None = None, followup: bool = False) -> Job | None:
    """Submit for a deferred interaction; the deferred response becomes the status message (with
    ``followup``, a new message: the second and later jobs of a sweep).
    ``release`` (from ``Preparing.hold``) is called as the queue takes the job (or it is refused before):
    from then the queue counts it, so that it is never counted twice.
    ``source``: what a button press was on (``rerun_of``, ``variation_of``) and options (``timelapse``)."""
    owner = str(interaction.user.id)
    asker = Asker.of(interaction)
    try:
        bot.moderation.check(asker, req.prompt, req.region)
    except UserError as e:
        _submitted(release)
        await refuse(interaction, e)
        return None
    msg: discord.Message | None
    try:
        if followup:
            msg = await interaction.followup.send(content=_pending_text(req, note), allowed_mentions=QUIET, wait=True)
        else:
            msg = await interaction.edit_original_response(content=_pending_text(req, note), allowed_mentions=QUIET)
    except discord.HTTPException as e:
        log.warning("could not show the job for interaction %s (%s)", interaction.id, e.status)
        msg = None
    thread_id, made = (await open_thread(bot, msg, req.prompt)) if msg is not None else (None, False)
    origin = (source or Origin()).model_copy(update=dict(
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        status_message_id=msg.id if msg else None,
        status_channel_id=msg.channel.id if msg else interaction.channel_id,
        thread_id=thread_id,
        interaction_token=interaction.token,
        application_id=interaction.application_id,
        interaction_at=interaction.created_at.timestamp() if interaction.created_at else time.time(),
        user_id=interaction.user.id,
        note=note,
    ))
    _submitted(release)  # the queue counts the job from here on (and has the last word on the limit)
    try:
        job, _ = await bot.queue.submit(req, owner=owner, origin=origin.stored(),
                                        priority=priority_for(bot.cfg, interaction.user, interaction.guild_id),
                                        forget_after={INTERACTION_TOKEN: TOKEN_EXPIRES_S},
                                        moderator=is_moderator(bot.cfg, interaction.user, interaction.guild_id))
    except UserError as e:
        if made:
            await _delete_thread(bot, thread_id)
        await refuse(interaction, e)
        return None
    bot.modlog.accepted(asker, job, msg.jump_url if msg is not None else None)
    if msg is not None:
        await _add_cancel(bot, msg)
    return job


async def from_message(bot: VQGANBot, anchor: discord.Message | discord.PartialMessage, req: Request, *,
                       owner: int, member: discord.Member | discord.User | None = None, note: str | None = None,
                       source: Origin | None = None, release: Callable[[], None] | None = None,
                       command: str = "reply") -> Job | None:
    """Submit for a gesture: the status message replies to ``anchor`` and opens the thread.
    ``source``: what the gesture was on (``rerun_of``, ``variation_of``).
    ``release`` (from ``Preparing.hold``) is called as the queue takes the job (or it is refused before):
    from then the queue counts it, so that it is never counted twice.
    ``command``: how the log channel names the gesture."""
    guild_id = _guild_id(anchor, member)
    asker = Asker(owner, guild_id, anchor.channel.id, command)
    try:
        bot.moderation.check(asker, req.prompt, req.region)
    except UserError as e:
        _submitted(release)
        await notice(anchor, f"<@{owner}> {counted(bot, e, None)}", bot.cfg.discord.notice_delete_after_s)
        return None
    text = _pending_text(req, note)
    try:
        status = await anchor.reply(text, mention_author=False, allowed_mentions=MENTIONS)
    except discord.HTTPException as e:
        log.info("cannot reply to %s (%s); posting in the channel", anchor.id, e.status)
        try:
            status = await anchor.channel.send(text, allowed_mentions=MENTIONS)
        except discord.HTTPException as e2:
            log.warning("cannot post in channel %s (%s); dropping the gesture", anchor.channel.id, e2.status)
            return None
    thread_id, made = await open_thread(bot, status, req.prompt)
    origin = (source or Origin()).model_copy(update=dict(
        guild_id=guild_id,
        channel_id=anchor.channel.id,
        status_message_id=status.id,
        status_channel_id=status.channel.id,
        thread_id=thread_id,
        reply_to=anchor.id,
        user_id=owner,
        note=note,
    ))
    _submitted(release)  # the queue counts the job from here on (and has the last word on the limit)
    try:
        job, _ = await bot.queue.submit(req, owner=str(owner), origin=origin.stored(),
                                        priority=priority_for(bot.cfg, member, guild_id),
                                        moderator=is_moderator(bot.cfg, member, guild_id))
    except UserError as e:
        if made:
            await _delete_thread(bot, thread_id)
        try:
            await status.edit(content=f"⚠️ <@{owner}> {counted(bot, e, None)}", allowed_mentions=QUIET)
            if bot.cfg.discord.notice_delete_after_s:
                await status.delete(delay=bot.cfg.discord.notice_delete_after_s)
        except discord.HTTPException:
            pass
        return None
    bot.modlog.accepted(asker, job, status.jump_url)
    await _add_cancel(bot, status)
    return job


def sweep_note(i: int, n: int, note: str | None) -> str | None:
    """The line under each status of a sweep (or ``--repeat``): which job of how many it is."""
    if n <= 1:
        return note
    return f"job {i} of {n} from one prompt" + (f" · {note}" if note else "")


async def all_from_interaction(bot: VQGANBot, interaction: discord.Interaction, reqs: list[Request],
                               note: str | None = None, release: Callable[[], None] | None = None, *,
                               source: Origin | None = None) -> list[Job]:
    """``from_interaction`` for each job a prompt made, in order: the first as the answer, the others
    as followups. ``release`` is called once per job. A refusal by the queue stops the rest."""
    jobs = []
    for i, req in enumerate(reqs):
        job = await from_interaction(bot, interaction, req, sweep_note(i + 1, len(reqs), note), release,
                                     source=source, followup=i > 0)
        if job is None:
            break
        jobs.append(job)
    return jobs


async def all_from_message(bot: VQGANBot, anchor: discord.Message | discord.PartialMessage, reqs: list[Request], *,
                           owner: int, member: discord.Member | discord.User | None = None, note: str | None = None,
                           source: Origin | None = None, release: Callable[[], None] | None = None,
                           command: str = "reply") -> list[Job]:
    """``from_message`` for each job a prompt made, in order (each status replies to ``anchor``)."""
    jobs = []
    for i, req in enumerate(reqs):
        job = await from_message(bot, anchor, req, owner=owner, member=member, source=source, release=release,
                                 note=sweep_note(i + 1, len(reqs), note), command=command)
        if job is None:
            break
        jobs.append(job)
    return jobs
