"""/zoom: an endless-zoom video, queued like any other job.

Each frame starts from the last one zoomed in and paints a few steps; the frames show up in the thread
as they are made, and the video (MP4, fitted to the upload limit) follows the last one. The limits
(``[limits] max_frames``, ``max_video_steps`` = frames x steps per frame) are checked before deferring,
so an over-limit zoom is refused at once, privately.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import personal, replies, submit
from bot.access import check_access_interaction
from bot.config import BotConfig
from bot.inputs import build_request, job_fields, read_prompt
from bot.modlog import Asker
from bot.pending import check_pending
from engine import MAX_SEED, Request, UserError

if TYPE_CHECKING:
    from bot.app import VQGANBot

log = logging.getLogger(__name__)

def zoom_request(cfg: BotConfig, fields: list[dict[str, Any]], frames: int, steps_per_frame: int | None,
                 zoom: float | None) -> Request:
    """A validated zoom request within the server's limits (``check_limits`` covers ``max_frames`` and
    ``max_video_steps``), or a one-line ``UserError``. ``fields``: what the prompt asks for (its
    parameters, ``bot.inputs.job_fields``): one video, so no sweep and no ``--steps``."""
    if len(fields) > 1:
        raise UserError(f"a zoom video is one job, and this prompt makes {len(fields)} (a sweep or --repeat); "
                        "sweeps work in /imagine")
    if "steps" in fields[0]:
        raise UserError("--steps: a zoom paints steps_per_frame steps on each frame")
    spec: dict[str, Any] = {"frames": frames}
    if steps_per_frame is not None:
        spec["steps_per_frame"] = steps_per_frame
    if zoom is not None:
        spec["zoom"] = zoom
    return build_request(cfg, zoom=spec, **fields[0])


class Zoom(commands.Cog):
    """Endless-zoom videos."""

    def __init__(self, bot: VQGANBot) -> None:
        self.bot = bot

    @app_commands.command(name="zoom", description="Make an endless-zoom video from words")
    @app_commands.describe(
        prompt="What to zoom into, e.g. 'a fractal city' (story: 'a forest ^ a forest on fire')",
        frames="How many frames the video has",
        steps_per_frame="Steps painted on each frame (more = more detail, more time)",
        zoom="How much each frame zooms in, e.g. 1.02",
        seed="Same seed + same prompt = same video (default: random)",
    )
    async def zoom(
        self,
        interaction: discord.Interaction,
        prompt: str,
        frames: app_commands.Range[int, 1, 100000],
        steps_per_frame: app_commands.Range[int, 1, 100000] | None = None,
        zoom: app_commands.Range[float, 0.5, 2.0] | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
    ) -> None:
        cfg = self.bot.cfg
        owner = str(interaction.user.id)
        try:
            check_access_interaction(cfg, interaction)
            wanted = await job_fields(cfg, read_prompt(cfg, prompt), {"seed": seed}, user=interaction.user.id,
                                      guild=interaction.guild_id, styles=self.bot.styles)
            mine = await personal.personalise(self.bot.preferences, cfg, wanted, user=interaction.user.id,
                                              guild=interaction.guild_id, kinds=personal.PAINTING_KINDS)
            check_pending(cfg, self.bot.queue, owner, self.bot.preparing)
            req = zoom_request(cfg, mine.jobs, frames, steps_per_frame, zoom)
            self.bot.moderation.check(Asker.of(interaction), req.prompt)
        except UserError as e:
            await replies.refuse(interaction, e)
            return
        with self.bot.preparing.hold(owner) as release:
            await interaction.response.defer(thinking=True)
            await submit.from_interaction(self.bot, interaction, req, note=mine.note, release=release)


async def setup(bot: VQGANBot) -> None:
    await bot.add_cog(Zoom(bot))
