"""/settings: each person's defaults, on a panel only they see (select menus, a form, Reset).

The panel is drawn from the stored settings each time; its menus and buttons are ``DynamicItem``s whose
``custom_id`` (``vqgan-settings:<what>``) says all they do, and the form's answer is read from its
custom_id by ``on_interaction``, so a panel opened before a restart still works after it. Every change
is checked as a request would check it (``bot.personal.check_settings``) before it is saved; a refusal
is one private line and the panel stays as it was.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

import discord
from discord import app_commands
from discord.ext import commands
from pydantic import ValidationError

from bot import limits, personal, replies
from bot.access import check_access_interaction
from bot.config import BotConfig
from bot.inputs import ASPECTS, parse_size
from bot.texts import short_prompt
from engine import (
    GRID_SIZES,
    UserError,
    UserSettings,
    clip_choices,
    quoted,
    validation_message,
    vqgan_choices,
)

if TYPE_CHECKING:
    from bot.app import VQGANBot

log = logging.getLogger(__name__)

PREFIX = "vqgan-settings:"  # not "vqgan:...": that pattern is the job buttons' (bot.views)
FORM = f"{PREFIX}form"
DEFAULT = "default"  # a menu's "the server's default" option
COG = "Settings"
Menu = Literal["model", "clip", "aspect", "grid"]
Action = Literal["form", "timelapse", "reset"]
GRID_COUNTS: tuple[int, ...] = tuple(GRID_SIZES)
"""The grid counts the panel offers (its "grid" menu), those /imagine's ``count`` offers."""


class SettingMenu(discord.ui.DynamicItem[discord.ui.Select[Any]],
                  template=rf"{PREFIX}(?P<menu>{'|'.join(get_args(Menu))})"):
    """One select menu of the panel; the choice is saved for whoever picks it."""

    def __init__(self, menu: Menu, options: list[discord.SelectOption] | None = None,
                 placeholder: str | None = None) -> None:
        super().__init__(discord.ui.Select(custom_id=f"{PREFIX}{menu}", options=options or [],
                                           placeholder=placeholder))
        self.menu: Menu = menu

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str]) -> SettingMenu:
        return cls(cast(Menu, match["menu"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog: Any = interaction.client.get_cog(COG) if isinstance(interaction.client, commands.Bot) else None
        if cog is not None:
            await cog.choose(interaction, self.menu, self.item.values)


class SettingButton(discord.ui.DynamicItem[discord.ui.Button[Any]],
                    template=rf"{PREFIX}(?P<action>{'|'.join(get_args(Action))})"):
    """The form, the timelapse switch and Reset."""

    def __init__(self, action: Action, label: str = "", style: discord.ButtonStyle = discord.ButtonStyle.secondary,
                 emoji: str | None = None) -> None:
        super().__init__(discord.ui.Button(custom_id=f"{PREFIX}{action}", label=label or action, style=style,
                                           emoji=emoji))
        self.action: Action = action

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str]) -> SettingButton:
        return cls(cast(Action, match["action"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog: Any = interaction.client.get_cog(COG) if isinstance(interaction.client, commands.Bot) else None
        if cog is not None:
            await cog.press(interaction, self.action)


def _options(choices: list[str], current: str | None, default_label: str) -> list[discord.SelectOption]:
    """A menu's options: the server's default first, then the choices that fit Discord (25 in all)."""
    fitting = [c for c in choices if len(c) <= limits.CHOICE][:24]
    options = [discord.SelectOption(label=limits.fit(default_label, limits.CHOICE), value=DEFAULT,
                                    default=current is None)]
    return options + [discord.SelectOption(label=c, value=c, default=c == current) for c in fitting]


def _size_text(cfg: BotConfig, s: UserSettings) -> str:
    if s.size:
        return f"{s.size[0]}x{s.size[1]}"
    if s.aspect:
        return s.aspect
    return f"default ({cfg.generation.width}x{cfg.generation.height})"


def panel_text(cfg: BotConfig, s: UserSettings) -> str:
    """What the panel says: each setting, and what a blank one means."""
    g, models = cfg.generation, cfg.models
    lines = [
        "**Your settings** · an option you give in a command wins; *default* is this server's",
        f"• model: `{s.model or f'default ({vqgan_choices(models)[0]})'}`",
        f"• CLIP: `{s.clip or f'default ({clip_choices(models)[0]})'}`",
        f"• size: `{_size_text(cfg, s)}`",
        f"• steps: `{s.steps if s.steps is not None else f'default ({g.steps})'}`",
        f"• timelapse: {'on' if s.timelapse else 'off'}",
        f"• style suffix: {f'**{short_prompt(s.suffix, 300)}**' if s.suffix else 'none'} (added to every prompt)",
    ]
    if GRID_COUNTS:
        lines.insert(5, f"• grid: `{s.grid if s.grid is not None else 'default'}`")
    if note := personal.unusable(cfg, s):
        lines.append(f"-# ⚠️ {note}")
    return limits.fit("\n".join(lines))


def panel_view(cfg: BotConfig, s: UserSettings) -> discord.ui.View:
    """The menus (only those with a choice to make) and the buttons, in at most five rows."""
    view = discord.ui.View(timeout=None)
    models = cfg.models
    if len(vqgan_choices(models)) > 1:
        view.add_item(SettingMenu("model", _options(vqgan_choices(models), s.model, "model: the server's default"),
                                  "VQGAN model"))
    if len(clip_choices(models)) > 1:
        view.add_item(SettingMenu("clip", _options(clip_choices(models), s.clip, "CLIP: the server's default"),
                                  "CLIP model"))
    shapes = _options(list(ASPECTS), s.aspect if not s.size else None,
                      f"shape: the server's default ({cfg.generation.width}x{cfg.generation.height})")
    if s.size:
        shapes[0].default = False
        shapes.insert(1, discord.SelectOption(label=f"size {s.size[0]}x{s.size[1]} (from the form)", value="size",
                                              default=True))
    view.add_item(SettingMenu("aspect", shapes, "Shape of the picture"))
    if GRID_COUNTS:
        view.add_item(SettingMenu("grid", _options([str(n) for n in GRID_COUNTS],
                                                   str(s.grid) if s.grid is not None else None,
                                                   "grid: the server's default"), "Pictures per /imagine"))
    view.add_item(SettingButton("form", "Steps, size, style…", discord.ButtonStyle.primary, "✏️"))
    view.add_item(SettingButton("timelapse", f"Timelapse: {'on' if s.timelapse else 'off'}",
                                discord.ButtonStyle.success if s.timelapse else discord.ButtonStyle.secondary, "🎞️"))
    view.add_item(SettingButton("reset", "Reset", discord.ButtonStyle.danger))
    return view


class SettingsForm(discord.ui.Modal):
    """Steps, size and the style suffix, filled in with the current ones (answered by ``on_interaction``)."""

    def __init__(self, cfg: BotConfig, s: UserSettings) -> None:
        super().__init__(title="Your settings", custom_id=FORM, timeout=None)
        lim = cfg.limits
        self.add_item(discord.ui.TextInput(
            label="Steps (empty = the server's default)", custom_id="steps", required=False, max_length=6,
            placeholder=f"1 to {lim.max_steps}; the server's default is {cfg.generation.steps}",
            default=str(s.steps) if s.steps is not None else None))
        self.add_item(discord.ui.TextInput(
            label="Size (empty = the shape from the menu)", custom_id="size", required=False, max_length=12,
            placeholder="e.g. 384x256", default=f"{s.size[0]}x{s.size[1]}" if s.size else None))
        self.add_item(discord.ui.TextInput(
            label="Style suffix, added to every prompt", custom_id="suffix", required=False,
            style=discord.TextStyle.paragraph, max_length=min(lim.max_prompt_chars, 4000),
            placeholder="e.g. oil painting, dramatic lighting", default=s.suffix or None))

    async def on_submit(self, interaction: discord.Interaction) -> None:
        """Answered by ``Settings.on_interaction``, the same way before and after a restart."""
        self.stop()


def changed(s: UserSettings, **changes: Any) -> UserSettings:
    """``s`` with ``changes``, validated (a one-line ``UserError``, never a pydantic dump)."""
    try:
        return UserSettings.model_validate({**s.model_dump(), **changes})
    except ValidationError as e:
        raise UserError(validation_message(e)) from None


def from_form(cfg: BotConfig, s: UserSettings, values: dict[str, str]) -> UserSettings:
    """The settings with the form's answers; a malformed one is a one-line ``UserError``."""
    changes: dict[str, Any] = {"suffix": " ".join(values.get("suffix", "").split())}
    steps = values.get("steps", "").strip()
    if steps and not steps.isdigit():
        raise UserError(f"steps should be a whole number (got {quoted(steps)})")
    changes["steps"] = int(steps) if steps else None
    if size := values.get("size", "").strip():
        changes.update(size=parse_size(cfg, size, None), aspect=None)
    else:
        changes["size"] = None
    return changed(s, **changes)


class Settings(commands.Cog):
    """/settings, its panel's menus and buttons, and its form."""

    def __init__(self, bot: VQGANBot) -> None:
        self.bot = bot

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(SettingMenu, SettingButton)

    async def cog_unload(self) -> None:
        self.bot.remove_dynamic_items(SettingMenu, SettingButton)

    @app_commands.command(name="settings", description="Your defaults: model, size, steps, timelapse, a style suffix")
    async def settings_cmd(self, interaction: discord.Interaction) -> None:
        try:
            check_access_interaction(self.bot.cfg, interaction)
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        s = await self.bot.preferences.settings(interaction.user.id)
        await interaction.response.send_message(panel_text(self.bot.cfg, s), view=panel_view(self.bot.cfg, s),
                                                ephemeral=True, allowed_mentions=replies.QUIET)

    async def _save(self, interaction: discord.Interaction, s: UserSettings, before: UserSettings) -> None:
        """Check what changed since ``before`` and keep ``s`` for the person, then show the panel again (in
        place when it can)."""
        cfg = self.bot.cfg
        try:
            personal.check_settings(cfg, s, before)
            await self.bot.preferences.save_settings(interaction.user.id, s)
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        text, view = panel_text(cfg, s), panel_view(cfg, s)
        if interaction.message is not None:
            await interaction.response.edit_message(content=text, view=view, allowed_mentions=replies.QUIET)
        else:
            await interaction.response.send_message(text, view=view, ephemeral=True, allowed_mentions=replies.QUIET)

    async def choose(self, interaction: discord.Interaction, menu: Menu, values: list[str]) -> None:
        s = before = await self.bot.preferences.settings(interaction.user.id)
        value = values[0] if values else DEFAULT
        picked = None if value == DEFAULT else value
        changes: dict[str, Any] = {menu: picked}
        if menu == "aspect":  # "size": the size from the form, as it was
            changes = {} if value == "size" else {"aspect": picked, "size": None}
        try:
            if menu == "grid":
                if picked is not None and picked not in {str(n) for n in GRID_COUNTS}:
                    raise UserError(f"grid should be one of {', '.join(map(str, GRID_COUNTS))}")
                changes = {"grid": int(picked) if picked is not None else None}
            s = changed(s, **changes)
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        await self._save(interaction, s, before)

    async def press(self, interaction: discord.Interaction, action: Action) -> None:
        s = await self.bot.preferences.settings(interaction.user.id)
        if action == "form":
            await interaction.response.send_modal(SettingsForm(self.bot.cfg, s))
        elif action == "timelapse":
            await self._save(interaction, changed(s, timelapse=not s.timelapse), s)
        else:
            await self._save(interaction, UserSettings(), s)

    @commands.Cog.listener()
    async def on_interaction(self, interaction: discord.Interaction) -> None:
        """The form's answer (see the module docstring)."""
        data: dict[str, Any] = dict(interaction.data or {})
        if interaction.type is not discord.InteractionType.modal_submit or data.get("custom_id") != FORM:
            return
        values = {str(c.get("custom_id")): str(c.get("value") or "")
                  for row in data.get("components", []) for c in row.get("components", [])}
        try:
            check_access_interaction(self.bot.cfg, interaction)
            before = await self.bot.preferences.settings(interaction.user.id)
            s = from_form(self.bot.cfg, before, values)
        except UserError as e:
            await replies.refuse(interaction, str(e))
            return
        await self._save(interaction, s, before)


async def setup(bot: VQGANBot) -> None:
    await bot.add_cog(Settings(bot))
