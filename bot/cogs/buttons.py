"""What the buttons under results and status messages do (drawn by ``bot.views``).

A press names its job in its ``custom_id``; the job comes from the job store, so buttons on
messages posted before a restart work the same. Anyone may press Rerun, Vary, Edit, Timelapse,
Details, Upscale, Zoom out and the pans, and a grid's U1..Un (upscale that picture) and V1..Vn (vary it): a
new job is theirs, with their limits and access checks (the same code paths as the 🔁/🎲 reactions, the reply
edit and the context menu's form), posted on its own. A candidate's picture is found beside its grid in the
results folder (``<job id>-<i>.png``). Cancel obeys the ❌ rule (owner or moderator). Every press is answered
within Discord's 3 s: quick checks first, refusals privately,
then a defer before anything slow. Quick repeated presses of one button by one person are
acknowledged silently (``Debounce``): ten clicks start one job.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import discord
from discord.ext import commands

from bot import replies, submit
from bot.access import check_access_interaction, moderates
from bot.cogs.gestures import EditForm
from bot.editing import MAX_PIECES, again, piece_name, upscale_request
from bot.limits import fit
from bot.modlog import Asker
from bot.origin import Origin
from bot.pending import check_pending
from bot.texts import describe_request, models_text, request_words, short_prompt
from bot.timelapse import NO_FRAMES, frames_of, render
from bot.uploads import ImageRef, check_attachment, image_attachments
from bot.views import COG, Debounce, JobButton, candidate_action
from engine import Job, Request, UserError

if TYPE_CHECKING:
    from bot.app import VQGANBot

log = logging.getLogger(__name__)


def pruned_text(bot: VQGANBot, job_id: str) -> str:
    return (f"job `{job_id}` was cleaned up (jobs are kept {bot.cfg.queue.keep_days:g} days); "
            "reply to the picture with words to edit it")


def rerun_line(job: Job) -> str | None:
    """The command line that paints this result again from the PNG posted in Discord (its metadata holds
    the request). It names the posted file, never a path on the bot's server."""
    if not job.result_path:
        return None
    return f"python -m engine rerun vqgan-{job.request.seed}.png -o {shlex.quote(f'{job.id}-rerun.png')}"


_PATHS = ("init_image", "mask", "vqgan_config", "vqgan_checkpoint", "clip_config", "clip_checkpoint")


def _file_names(value: Any) -> Any:
    """``value`` (a dumped request, or part of one) with each server path cut to its file name: the
    pressers see which upload or model file was used, not where the bot keeps it."""
    if isinstance(value, dict):
        return {k: (os.path.basename(v) if isinstance(v, str) and (k in _PATHS or k == "path") else _file_names(v))
                for k, v in value.items()}
    if isinstance(value, list):
        return [_file_names(v) for v in value]
    return value


def details_text(job: Job) -> str:
    """Everything about a job, for the Details button (only the presser sees it)."""
    r = job.request
    vqgan, clip = models_text(r.models)
    took = f"{job.seconds:.1f} s" if job.seconds is not None else "—"
    lines = [
        f"ℹ️ {describe_request(r)}",
        f"job `{job.id}` · by <@{job.owner}> · {job.state} · took {took}"
        + (f" · made <t:{int(job.finished_at)}:R>" if job.finished_at else ""),
        f"seed `{r.seed}` · models: VQGAN `{vqgan}`, CLIP `{clip}`"
        + (f" · from job `{r.parent}`" if r.parent else ""),
    ]
    if r.parameters or r.negative:
        lines.append(f"prompt: {short_prompt(r.prompt, 300) or '(images only)'}"
                     + (f" · parameters: `{fit(r.parameters.replace('`', ''), 300)}`" if r.parameters else "")
                     + (f" · keeping out: {short_prompt(', '.join(r.negative), 200)}" if r.negative else ""))
    line = rerun_line(job)
    if line:
        lines.append(f"redo it exactly:\n```sh\n{line}\n```")
    body = json.dumps(_file_names(r.model_dump(mode="json")), indent=1, ensure_ascii=False)
    room = 1900 - sum(len(x) + 1 for x in lines) - 20
    if len(body) > room:
        body = body[: max(0, room - 1)] + "…"
    lines.append(f"request:\n```json\n{body}\n```")
    return "\n".join(lines)


class Buttons(commands.Cog, name=COG):
    """Answers presses of ``JobButton``s."""

    def __init__(self, bot: VQGANBot) -> None:
        self.bot = bot
        self.debounce = Debounce()

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(JobButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(JobButton)

    async def press(self, interaction: discord.Interaction, action: str, job_id: str) -> None:
        """One press; never raises (a bug is logged and the presser told briefly)."""
        try:
            await self._press(interaction, action, job_id)
        except Exception:
            log.exception("button %s on job %s failed", action, job_id)
            await replies.refuse(interaction, "something went wrong on my side; please try again later")

    async def _press(self, interaction: discord.Interaction, action: str, job_id: str) -> None:
        job = self.bot.queue.get(job_id)
        try:
            check_access_interaction(self.bot.cfg, interaction)
            if job is None:
                raise UserError(pruned_text(self.bot, job_id))
        except UserError as e:
            await replies.refuse(interaction, e)
            return
        if not self.debounce.first(interaction.user.id, job_id, action):
            await interaction.response.defer()  # a repeat: acknowledged, nothing more
            return
        cfg = self.bot.cfg
        if (one := candidate_action(action)) is not None:  # U1..U9, V1..V9 under a grid
            how, i = one
            await self._new_job(interaction, (lambda: upscale_request(cfg, job, i)) if how == "upscale"
                                else (lambda: again(cfg, job, "vary", i)))
            return
        match action:
            case "rerun" | "vary" | "zoomout15" | "zoomout2" | "panleft" | "panright" | "panup" | "pandown":
                await self._new_job(interaction, lambda: again(cfg, job, action))
            case "upscale":
                await self._new_job(interaction, lambda: upscale_request(cfg, job))
            case "edit":
                await self._edit(interaction, job)
            case "timelapse":
                await self._timelapse(interaction, job)
            case "details":
                await interaction.response.send_message(details_text(job), ephemeral=True,
                                                        allowed_mentions=replies.QUIET)
            case "cancel":
                await self._cancel(interaction, job)

    async def _new_job(self, interaction: discord.Interaction,
                       build: Callable[[], tuple[Request, str, Origin]]) -> None:
        """Rerun, Vary, Upscale, U and V: a new job of the presser's (``build`` makes its request, note and
        origin, or refuses), its status the answer to the press."""
        owner = str(interaction.user.id)
        try:
            check_pending(self.bot.cfg, self.bot.queue, owner, self.bot.preparing)
            req, note, source = build()
            self.bot.moderation.check(Asker.of(interaction), req.prompt, req.region)
        except UserError as e:
            await replies.refuse(interaction, e)
            return
        with self.bot.preparing.hold(owner) as release:  # right after the check: no await between
            await interaction.response.defer(thinking=True)
            await submit.from_interaction(self.bot, interaction, req, note=note, release=release, source=source)

    async def _edit(self, interaction: discord.Interaction, job: Job) -> None:
        """Edit: a form for the words (and the part), then the same path as the context menu's."""
        target = interaction.message
        images = image_attachments(target) if target is not None else []
        try:
            if target is None or not images:
                raise UserError("that message has no picture left to edit")
            check_pending(self.bot.cfg, self.bot.queue, str(interaction.user.id), self.bot.preparing)
            shown = images[:MAX_PIECES]
            for i, a in enumerate(shown):
                check_attachment(self.bot.cfg, ImageRef.of(a), piece_name(i, len(shown)))
        except UserError as e:
            await replies.refuse(interaction, e)
            return
        assert target is not None
        await interaction.response.send_modal(EditForm(target, "Edit this picture", region=True))

    async def _timelapse(self, interaction: discord.Interaction, job: Job) -> None:
        """Timelapse: made now from the stored frames, posted for everyone."""
        if not frames_of(self.bot.queue, job.id):
            await replies.refuse(interaction, NO_FRAMES)
            return
        await interaction.response.defer(thinking=True)
        limit = min(self.bot.cfg.discord.filesize_limit, interaction.filesize_limit or 10 * 1024 * 1024)
        try:
            clip = await render(self.bot.queue, job.id, limit)
        except UserError as e:
            await replies.refuse(interaction, str(e))  # nothing to show: not a refusal
            return
        await interaction.followup.send(
            f"{clip.caption()}\n-# job `{job.id}` **{request_words(job.request, 80)}**",
            file=clip.file(), allowed_mentions=replies.QUIET)

    async def _cancel(self, interaction: discord.Interaction, job: Job) -> None:
        """Cancel: the ❌ rule. Acknowledged first (the queue writes to disk); the status message then
        says how the job ended, and a refusal goes to the presser alone."""
        await interaction.response.defer()
        try:
            await self.bot.queue.cancel(job.id, by=str(interaction.user.id),
                                        moderator=moderates(self.bot.cfg, interaction.user, interaction.guild_id, job))
        except (UserError, KeyError) as e:
            await replies.refuse(interaction, e if isinstance(e, UserError) else pruned_text(self.bot, job.id))


async def setup(bot: VQGANBot) -> None:
    await bot.add_cog(Buttons(bot))
