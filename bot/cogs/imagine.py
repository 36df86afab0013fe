"""/imagine and /edit: slash commands that queue a painting.

Everything that can be checked from the interaction payload alone is checked before deferring,
so most refusals are instant and private; downloads happen after the defer (Discord allows 3 s).
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import limits, personal, replies, submit
from bot.access import check_access_interaction
from bot.editing import piece_name, prepare, split_arrow
from bot.inputs import ASPECTS, build_request
from bot.modlog import Asker
from bot.origin import Origin
from bot.pending import check_pending
from bot.uploads import ImageRef, check_attachment, download
from engine import (
    MAX_SEED,
    ModelsConfig,
    UserError,
    clip_choices,
    unreachable_names,
    vqgan_choices,
    with_choices,
)

if TYPE_CHECKING:
    from bot.app import VQGANBot

log = logging.getLogger(__name__)

TILES = {"none": "none", "both": "xy", "horizontal": "x"}  # /imagine tile: -> Request.tile


class Imagine(commands.Cog):
    """Paint from words, or edit an uploaded image."""

    def __init__(self, bot: VQGANBot) -> None:
        self.bot = bot

    async def _precheck(self, interaction: discord.Interaction, prompt: str,
                        attachments: dict[str, discord.Attachment | None], **fields: Any) -> bool:
        """Fast checks before deferring; answers the refusal itself and returns False."""
        cfg = self.bot.cfg
        try:
            check_access_interaction(cfg, interaction)
            check_pending(cfg, self.bot.queue, str(interaction.user.id), self.bot.preparing)
            build_request(cfg, prompt=prompt, **fields)
            self.bot.moderation.check(Asker.of(interaction), prompt, fields.get("region"))
            for what, att in attachments.items():
                if att is not None:
                    check_attachment(cfg, ImageRef.of(att), what)
        except UserError as e:
            await replies.refuse(interaction, e)
            return False
        return True

    async def _download(self, interaction: discord.Interaction, att: discord.Attachment | None,
                        what: str) -> Path | None:
        if att is None:
            return None
        return await download(self.bot, self.bot.cfg, ImageRef.of(att), what)

    @app_commands.command(name="imagine", description="Paint a picture from words")
    @app_commands.describe(
        prompt="What to paint, e.g. 'a forest rendered in low poly' or 'a castle:1|fog:-0.5'",
        seed="Same seed + same prompt = same picture (default: random)",
        steps="More steps = more detail, more time",
        size="Width x height in pixels, e.g. 384x256",
        aspect="Shape of the picture (ignored when size is given)",
        image="Start from this picture instead of noise",
        image_prompt="Also make it look like this picture",
        timelapse="Also post a video of the picture forming",
        model="The VQGAN that paints (the server's choices)",
        clip="The CLIP model that judges, or an ensemble 'A+B' (each extra model is slower)",
        style="One of your /style styles (or the server's): its words are added to the prompt",
        tile="A seamless tile: the picture wraps around (both ways, or left to right for a panorama)",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=k, value=k) for k in ASPECTS],
                          tile=[app_commands.Choice(name=k, value=v) for k, v in TILES.items()])
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: str,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, 100000] | None = None,
        size: str | None = None,
        aspect: str | None = None,
        image: discord.Attachment | None = None,
        image_prompt: discord.Attachment | None = None,
        timelapse: bool | None = None,
        model: str | None = None,
        clip: str | None = None,
        style: str | None = None,
        tile: str | None = None,
    ) -> None:
        cfg = self.bot.cfg
        try:  # the options given, then the asker's /settings, then config.toml
            check_access_interaction(cfg, interaction)
            mine = await personal.for_imagine(self.bot.preferences, cfg, user=interaction.user.id,
                                              guild=interaction.guild_id, prompt=prompt, style=style, size=size,
                                              aspect=aspect, timelapse=timelapse, steps=steps, model=model, clip=clip)
        except UserError as e:
            await replies.refuse(interaction, e)
            return
        prompt = mine.prompt
        fields: dict[str, Any] = dict(seed=seed, tile=tile, **mine.fields)
        atts = {"starting image": image, "image prompt": image_prompt}
        if not await self._precheck(interaction, prompt, atts, **fields):
            return
        # counted from right after the check (no await between) until the queue has the job
        with self.bot.preparing.hold(str(interaction.user.id)) as release:
            await interaction.response.defer(thinking=True)
            try:
                init = await self._download(interaction, image, "starting image")
                ip = await self._download(interaction, image_prompt, "image prompt")
                req = build_request(
                    cfg, prompt=prompt, kind="imagine", init_image=str(init) if init else None,
                    image_prompts=[{"path": str(ip), "weight": 1.0}] if ip else None, **fields)
            except UserError as e:
                await replies.refuse(interaction, e)
                return
            await submit.from_interaction(self.bot, interaction, req, note=mine.note, release=release,
                                          source=Origin(timelapse=True) if mine.timelapse else None)

    @imagine.autocomplete("model")
    async def _model_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        models = self.bot.cfg.models
        offered = [c for c in vqgan_choices(models) if _resolves(models, vqgan=c)]
        return _matching(offered, current, *self._unreachable())

    @imagine.autocomplete("style")
    async def _style_choices(self, interaction: discord.Interaction,
                             current: str) -> list[app_commands.Choice[str]]:
        own, server = await self.bot.preferences.styles(interaction.user.id, interaction.guild_id)
        return _matching(list(dict.fromkeys(s.name for s in (*own, *server))), current)

    @imagine.autocomplete("clip")
    async def _clip_choices(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        models = self.bot.cfg.models
        offered = [c for c in clip_choices(models) if _resolves(models, clip=c)]
        return _matching(offered, current, *self._unreachable())

    def _unreachable(self) -> tuple[set[str], str]:
        """Offered models no worker has or can download now (listed last and marked, so nobody waits for a
        refusal), and why: the workers are offline, or the files' links are gone."""
        reports = self.bot.queue.availability()
        offline = bool(reports) and all(a is not None and a.offline for a in reports)
        return unreachable_names(reports), "offline" if offline else "no download link"

    @app_commands.command(name="edit", description="Change an uploaded picture with words")
    @app_commands.describe(
        image="The picture to change (transparent parts are repainted)",
        prompt="What it should become, e.g. 'a snowy mountain' (or 'jacket -> a fur coat')",
        region="Only change this part, found by CLIP, e.g. 'jacket'",
        mask="Optional black-and-white picture of the same shape: white = may change",
        seed="Same seed = same result (default: random)",
        steps="More steps = stronger change, more time",
        image2="Another picture: side by side with the first, the seams repainted into one",
        image3="A third picture for the collage",
        image4="A fourth picture for the collage",
    )
    async def edit(
        self,
        interaction: discord.Interaction,
        image: discord.Attachment,
        prompt: str,
        region: str | None = None,
        mask: discord.Attachment | None = None,
        seed: app_commands.Range[int, 0, MAX_SEED] | None = None,
        steps: app_commands.Range[int, 1, 100000] | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
    ) -> None:
        cfg = self.bot.cfg
        fields: dict[str, Any] = dict(seed=seed, steps=steps)
        try:
            if region is None:
                region, prompt = split_arrow(prompt)
            check_access_interaction(cfg, interaction)
            mine = await personal.for_painting(self.bot.preferences, cfg, user=interaction.user.id,
                                               guild=interaction.guild_id, prompt=prompt)
        except UserError as e:
            await replies.refuse(interaction, e)
            return
        prompt = mine.prompt
        fields.update(mine.fields)
        pictures = [a for a in (image, image2, image3, image4) if a is not None]
        atts = {piece_name(i, len(pictures)): a for i, a in enumerate(pictures)} | {"mask": mask}
        if not await self._precheck(interaction, prompt, atts, kind="edit", region=region, **fields):
            return
        # counted from right after the check (no await between) until the queue has the job
        with self.bot.preparing.hold(str(interaction.user.id)) as release:
            await interaction.response.defer(thinking=True)
            try:
                edit = await prepare(self.bot, cfg, [ImageRef.of(a) for a in pictures],
                                     ImageRef.of(mask) if mask else None)
                req = build_request(cfg, prompt=prompt, kind="edit", region=region, **edit.fields(), **fields)
            except UserError as e:
                await replies.refuse(interaction, e)
                return
            await submit.from_interaction(self.bot, interaction, req, note=personal.notes(edit.note, mine.note),
                                          release=release)


def _resolves(models: ModelsConfig, *, vqgan: str | None = None, clip: str | None = None) -> bool:
    """Whether a choice, sent back exactly as offered, is accepted (``build_request`` would take it)."""
    try:
        with_choices(models.spec(), models, vqgan=vqgan, clip=clip)
    except (UserError, ValueError):
        return False
    return True


def _matching(choices: list[str], current: str, unreachable: Collection[str] = (),
              why: str = "offline") -> list[app_commands.Choice[str]]:
    """The choices containing what the user typed so far (Discord shows at most 25); those with a
    model nobody can get now (e.g. not downloaded on an offline machine) last, and marked.

    Only a choice whose value fits Discord's limit unchanged is offered: a value cut short would
    name another model, which the command then refuses. Only the mark of a name is ever cut."""
    found = [c for c in choices if current.lower() in c.lower() and len(c) <= limits.CHOICE]
    missing = {c for c in found if any(part in unreachable for part in c.split("+"))}
    found = [c for c in found if c not in missing] + [c for c in found if c in missing]
    return [app_commands.Choice(name=_marked(c, why) if c in missing else c, value=c) for c in found[:25]]


def _marked(choice: str, why: str) -> str:
    """``choice (not downloaded, why)`` in Discord's 100 characters: the choice itself is cut last."""
    for mark in (f" (not downloaded, {why})", " (not downloaded)"):
        if len(choice) + len(mark) <= limits.CHOICE:
            return choice + mark
    return limits.fit(choice, limits.CHOICE - len(" (not downloaded)")) + " (not downloaded)"


async def setup(bot: VQGANBot) -> None:
    long = [c for c in (*vqgan_choices(bot.cfg.models), *clip_choices(bot.cfg.models)) if len(c) > limits.CHOICE]
    if long:
        log.warning("[models] choices longer than Discord's %d characters are not offered by /imagine's "
                    "autocomplete (they can still be typed in full): %s", limits.CHOICE, ", ".join(long))
    await bot.add_cog(Imagine(bot))
