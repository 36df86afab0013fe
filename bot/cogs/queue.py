"""/queue, /cancel and /help: answers only the asker sees.

A server sees only its own jobs: /queue (and the moderators' fleet view) lists the jobs asked in
the server where it is typed (in a direct message: the asker's own), and a moderator's rights
count only on the server the job was asked in. Anybody may always cancel their own jobs.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot import limits, replies
from bot.access import check_access_interaction, guild_of, is_moderator, moderates
from bot.texts import request_words
from engine import TERMINAL, UserError, describe_fleet, quoted

if TYPE_CHECKING:
    from bot.app import VQGANBot
    from engine import Job, Lane

log = logging.getLogger(__name__)
SHOWN = 10


def help_text(bot: VQGANBot) -> str:
    d, lim = bot.cfg.discord, bot.cfg.limits
    gallery = " `/gallery`: a private link to a web page of your pictures." if bot.gallery is not None else ""
    return f"""**Painting with words**
`/imagine prompt:a forest rendered in low poly` paints a picture; watch it form in the thread.
• **Weights**: `a:1|b:-0.5` = more of a, less of b; e.g. `a castle:1|fog:-0.5` (weights are optional).
• **Seed**: the same prompt and seed give the same picture; leave it out for a random one.
• **Steps**: more steps, more detail, more waiting (at most {lim.max_steps}).
• **Size**: `size:384x256` or `aspect:wide` (at most {lim.max_width}x{lim.max_height}, {lim.max_pixels:,} pixels).
• **Images**: `image:` starts from your picture, `image_prompt:` makes it look like one.

**Editing**
• `/edit image:<picture> prompt:a snowy mountain`, optionally with `mask:` (a black-and-white picture of \
the same shape: white = may change, black = keep).
• **Reply** with words to any message that has an image (a result or anyone's upload) to edit it.
• Or attach a picture with words while mentioning me, or right-click a message → Apps → **Edit with VQGAN**.
• **One part only**: reply `jacket -> a fur coat`, or `/edit region:jacket prompt:a fur coat`; I show where \
I found it.
• **Collages**: several pictures (`image2:`, or attach several) go side by side, and transparent parts of \
a PNG are holes; the seams and holes are repainted into one picture.

**Buttons and reactions**
• Under each result: **Rerun**, **Vary**, **Edit** (a form; optionally only one part), **Timelapse** (a video of \
it forming) and **Details** (the full request, only for you). Anyone may press them; new jobs are yours.
• **Cancel** under a job's message while it waits or runs (yours, or anyone's if you are a moderator).
• {d.rerun_emoji} on a result: paint it again with a new seed.
• {d.vary_emoji} on a result: a variation, similar but different (fewer steps, from the picture itself).
• {d.cancel_emoji} on a job's message: cancel it (yours, or anyone's if you are a moderator).

`/settings` keeps your defaults; `/style save` names words to add with `style:`. `/describe image:` suggests prompts for a picture.{gallery}

**Parameters, sweeps, blends**
• End a prompt with parameters: `a lighthouse --ar 16:9 --no people, text --seed 7` (also `--steps N`, `--iw W`, `--model NAME`, `--clip NAME`, `--style NAME`, `--repeat N`); an option of the same name wins.
• **Sweeps**: `a {{red, blue}} car` is one job per choice; all of them count against your jobs waiting.
• `/blend image1: image2:` (up to 5; `weights:1,2`; words optional) paints a picture of them blended.

`/imagine ... timelapse:True` also posts the video of it forming. `/queue` shows what is waiting; `/cancel` stops your newest job; `/usage` your GPU time today. Prompts are at most \
{lim.max_prompt_chars} characters; you may have {bot.cfg.queue.per_owner_pending} jobs waiting at a time."""


def _shown_here(job: Job, guild_id: int | None, me: str) -> bool:
    """Whether /queue typed on server ``guild_id`` (None: a direct message) by ``me`` lists ``job``:
    the server's jobs, or in a direct message the asker's own; one's own jobs count everywhere."""
    return job.owner == me or (guild_id is not None and guild_of(job) == guild_id)


def _line(job: Job, position: int | None, lane: Lane = "fast") -> str:
    where = "🎨 now" if position == 0 else "⏳ just asked" if position is None else f"#{position}"
    where += " 🐢" if lane == "relax" and position else ""  # waits in the relax lane (engine.jobs.quota)
    return f"{where} · `{job.id}` **{request_words(job.request, 60)}** · <@{job.owner}>"


class QueueCommands(commands.Cog):
    """/queue, /cancel and /help: what is waiting, stopping a job, how to use the bot."""

    def __init__(self, bot: VQGANBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue", description="Show what is being painted and what is waiting")
    @app_commands.describe(show="all: the workers and this server's jobs (moderators)")
    async def queue_cmd(self, interaction: discord.Interaction, show: Literal["all"] | None = None) -> None:
        q = self.bot.queue
        me, here = str(interaction.user.id), interaction.guild_id
        try:
            check_access_interaction(self.bot.cfg, interaction)
            if show == "all" and not is_moderator(self.bot.cfg, interaction.user, here):
                raise UserError("only moderators can see the whole fleet")
        except UserError as e:
            await replies.refuse(interaction, e)
            return
        pending = [j for j in q.pending() if _shown_here(j, here, me)]
        if show == "all":
            text = describe_fleet(q.fleet(), [(j.owner, j.state) for j in pending],
                                  batch_size=self.bot.cfg.queue.batch_size)
            await interaction.response.send_message(f"**Fleet**\n```\n{limits.fit(text, 1800)}\n```",
                                                    ephemeral=True, allowed_mentions=discord.AllowedMentions.none())
            return
        lines = [_line(j, q.position(j.id), q.quota.lane_of(j)) for j in pending[:SHOWN]]
        if len(pending) > SHOWN:
            lines.append(f"… and {len(pending) - SHOWN} more")
        mine = [j for j in q.jobs_of(me) if j.state not in TERMINAL]
        text = "**Queue**\n" + ("\n".join(lines) if lines else "empty: nothing is being painted")
        text += "\n\n**Your jobs**\n" + ("\n".join(_line(j, q.position(j.id), q.quota.lane_of(j)) for j in mine)
                                          if mine else "none")
        await interaction.response.send_message(limits.fit(text), ephemeral=True,
                                                allowed_mentions=discord.AllowedMentions.none())

    @app_commands.command(name="cancel", description="Cancel your newest job, or the one with this id")
    @app_commands.describe(job="Job id (shown under each job); moderators may cancel anybody's")
    async def cancel_cmd(self, interaction: discord.Interaction, job: str | None = None) -> None:
        q = self.bot.queue
        me = str(interaction.user.id)
        try:
            check_access_interaction(self.bot.cfg, interaction)
            if job:
                target = q.get(job.strip().strip("`"))
                # another server's job is not even named to a stranger: as if there were none
                if target is None or not _shown_here(target, interaction.guild_id, me):
                    raise UserError(f"there is no job {quoted(job)} here; /queue shows the ids")
            else:
                mine = [j for j in q.jobs_of(me) if j.state not in TERMINAL]
                if not mine:
                    raise UserError("you have no job waiting or running")
                target = mine[0]
            await q.cancel(target.id, by=me,
                           moderator=moderates(self.bot.cfg, interaction.user, interaction.guild_id, target))
        except UserError as e:
            await replies.refuse(interaction, e)
            return
        await interaction.response.send_message(
            f"🛑 cancelled `{target.id}` **{request_words(target.request, 80)}**", ephemeral=True)

    @app_commands.command(name="help", description="How to paint and edit with this bot")
    async def help_cmd(self, interaction: discord.Interaction) -> None:
        """In as many messages as it takes: a server's custom emoji (``<a:name:id>``, up to 56
        characters each) can push the text over one message's limit."""
        first, *more = limits.split(help_text(self.bot))
        await interaction.response.send_message(first, ephemeral=True)
        for piece in more:
            await interaction.followup.send(piece, ephemeral=True)


async def setup(bot: VQGANBot) -> None:
    await bot.add_cog(QueueCommands(bot))
