"""/imagine and /edit: slash commands that queue a painting.

Everything that can be checked from the interaction payload alone is checked before deferring,
so most refusals are instant and private; downloads happen after the defer (Discord allows 3 s).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Awaitable, Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import limits, personal, replies, submit
from bot.access import check_access_interaction
from bot.editing import piece_name, prepare, split_arrow
from bot.inputs import ASPECTS, build_request, job_fields, parse_size, read_prompt
from bot.modlog import Asker
from bot.origin import Origin
from bot.pending import check_pending
from bot.uploads import ImageRef, check_attachment, download
from engine import (
    GRID_SIZES,
    MAX_SEED,
    ModelsConfig,
    Request,
    UserError,
    clip_choices,
    quoted,
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

    async def _precheck(self, interaction: discord.Interaction, text: str, options: dict[str, Any],
                        attachments: dict[str, discord.Attachment | None], *, arrow: bool = False,
                        has_image_prompts: bool = False, style: str | None = None,
                        kinds: tuple[str, ...] = personal.IMAGINE_KINDS, timelapse: bool | None = None,
                        grid: int | None = None, **fixed: Any) -> personal.Personalised | None:
        """Fast checks before deferring: access, the prompt's parameters and sweep, the pending limit for
        all its jobs, each job's request, the attachments. Answers a refusal itself and returns None;
        else each job's ``build_request`` fields, with the asker's /settings (``kinds`` of them) and
        style beneath the options and parameters. ``arrow``: ``a -> b`` in the words is a region (/edit);
        ``has_image_prompts``: the request will have some (``--iw`` weighs them)."""
        cfg = self.bot.cfg
        try:
            check_access_interaction(cfg, interaction)
            wanted = await job_fields(cfg, read_prompt(cfg, text), options, user=interaction.user.id,
                                      guild=interaction.guild_id, styles=self.bot.styles,
                                      image_prompts=has_image_prompts)
            if arrow:
                for fields in wanted:
                    fields["region"], fields["prompt"] = split_arrow(fields["prompt"])
            mine = await personal.personalise(self.bot.preferences, cfg, wanted, user=interaction.user.id,
                                              guild=interaction.guild_id, style=style, kinds=kinds,
                                              timelapse=timelapse)
            if grid is not None:  # /imagine: a grid of the count asked for, else the settings', else the server's
                for fields in mine.jobs:
                    fields["grid"] = fields.get("grid") or mine.grid or grid
            check_pending(cfg, self.bot.queue, str(interaction.user.id), self.bot.preparing, adding=len(wanted))
            for fields in mine.jobs:
                build_request(cfg, **fields, **fixed)
                self.bot.moderation.check(Asker.of(interaction), fields.get("prompt") or "", fields.get("region"))
            for what, att in attachments.items():
                if att is not None:
                    check_attachment(cfg, ImageRef.of(att), what)
        except UserError as e:
            await replies.refuse(interaction, e)
            return None
        return mine

    async def _queue(self, interaction: discord.Interaction, n: int,
                     build: Callable[[], Awaitable[tuple[list[Request], str | None]]],
                     source: Origin | None = None) -> None:
        """Defer (Discord allows 3 s), then ``build`` the ``n`` jobs' requests (downloads, collages) and queue
        them. Called right after the checks: the jobs count against the pending limit from before the first
        ``await`` until the queue has them."""
        with self.bot.preparing.hold(str(interaction.user.id), n) as release:
            await interaction.response.defer(thinking=True)
            try:
                reqs, note = await build()
            except UserError as e:
                await replies.refuse(interaction, e)
                return
            await submit.all_from_interaction(self.bot, interaction, reqs, note=note, release=release, source=source)

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
        count="How many pictures to paint at once, as one grid (default: your /settings, else the server's)",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=k, value=k) for k in ASPECTS],
                          tile=[app_commands.Choice(name=k, value=v) for k, v in TILES.items()])
    @app_commands.choices(count=[app_commands.Choice(name=str(n), value=n) for n in GRID_SIZES])
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
        count: int | None = None,
    ) -> None:
        cfg = self.bot.cfg
        try:
            width, height = parse_size(cfg, size, aspect)
        except UserError as e:
            await replies.refuse(interaction, e)
            return
        # the options given, then the prompt's parameters, then the asker's /settings, then config.toml
        options: dict[str, Any] = dict(seed=seed, steps=steps, width=width, height=height, model=model, clip=clip,
                                       tile=tile, grid=count)
        atts = {"starting image": image, "image prompt": image_prompt}
        mine = await self._precheck(interaction, prompt, options, atts, has_image_prompts=image_prompt is not None,
                                    style=style, timelapse=timelapse, grid=cfg.discord.grid)
        if mine is None:
            return

        async def build() -> tuple[list[Request], str | None]:
            init = await self._download(interaction, image, "starting image")
            ip = await self._download(interaction, image_prompt, "image prompt")
            return [build_request(cfg, kind="imagine", init_image=str(init) if init else None,
                                  image_prompts=[{"path": str(ip)}] if ip else None, **fields)
                    for fields in mine.jobs], mine.note

        await self._queue(interaction, len(mine.jobs), build, Origin(timelapse=True) if mine.timelapse else None)

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

    @app_commands.command(name="blend", description="Blend 2 to 5 pictures into a new one")
    @app_commands.describe(
        image1="A picture to blend", image2="Another picture to blend", image3="A third picture (optional)",
        image4="A fourth picture (optional)", image5="A fifth picture (optional)",
        prompt="Optional words to guide it too (parameters such as --seed 7 work here)",
        aspect="Shape of the picture", weights="How much of each picture, e.g. 1,2 (default: equal)",
    )
    @app_commands.choices(aspect=[app_commands.Choice(name=k, value=k) for k in ASPECTS])
    async def blend(
        self,
        interaction: discord.Interaction,
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        prompt: str | None = None,
        aspect: str | None = None,
        weights: str | None = None,
    ) -> None:
        """The pictures as image prompts (a new picture guided by them all), and the words if any."""
        cfg = self.bot.cfg
        pictures = [a for a in (image1, image2, image3, image4, image5) if a is not None]
        names = [f"image {i + 1}" for i in range(len(pictures))]
        try:
            width, height = parse_size(cfg, None, aspect)
            each = parse_weights(weights, len(pictures))
        except UserError as e:
            await replies.refuse(interaction, e)
            return
        atts: dict[str, discord.Attachment | None] = dict(zip(names, pictures, strict=True))
        placeholders = [{"path": name} for name in names]  # checked now (how many), downloaded after the defer
        mine = await self._precheck(interaction, prompt or "", dict(width=width, height=height), atts,
                                    has_image_prompts=True, kinds=personal.PAINTING_KINDS, timelapse=False,
                                    kind="imagine", image_prompts=placeholders)
        if mine is None:
            return

        async def build() -> tuple[list[Request], str | None]:
            paths = [await self._download(interaction, a, n) for a, n in zip(pictures, names, strict=True)]
            ips = [{"path": str(p), **({"weight": w} if w is not None else {})} for p, w in zip(paths, each, strict=True)]
            return ([build_request(cfg, kind="imagine", image_prompts=ips, **fields) for fields in mine.jobs],
                    f"a blend of {len(pictures)} pictures")

        await self._queue(interaction, len(mine.jobs), build)

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
        options: dict[str, Any] = dict(seed=seed, steps=steps, region=region)
        pictures = [a for a in (image, image2, image3, image4) if a is not None]
        atts = {piece_name(i, len(pictures)): a for i, a in enumerate(pictures)} | {"mask": mask}
        mine = await self._precheck(interaction, prompt, options, atts, arrow=region is None,
                                    kinds=personal.PAINTING_KINDS, timelapse=False, kind="edit")
        if mine is None:
            return

        async def build() -> tuple[list[Request], str | None]:
            edit = await prepare(self.bot, cfg, [ImageRef.of(a) for a in pictures], ImageRef.of(mask) if mask else None)
            return ([build_request(cfg, kind="edit", **{**edit.fields(), **fields}) for fields in mine.jobs],
                    personal.notes(edit.note, mine.note))

        await self._queue(interaction, len(mine.jobs), build)


def parse_weights(text: str | None, n: int) -> list[float | None]:
    """``/blend``'s ``weights:`` ("1,2,1"): one number per picture; none given = equal (or ``--iw``)."""
    if text is None or not text.strip():
        return [None] * n
    parts = [p for p in re.split(r"[,\s]+", text.strip()) if p]
    try:
        weights = [float(p) for p in parts]
    except ValueError:
        weights = []
    if len(weights) != n or not all(math.isfinite(w) for w in weights):
        raise UserError(f"weights: give one number per picture ({n}), commas between, e.g. "
                        f"{','.join(['1'] * (n - 1) + ['2'])} (got {quoted(text)})")
    return list(weights)


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
