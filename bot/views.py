"""The buttons under results and status messages: what they look like and what their ids carry.

Every button is one ``JobButton``: a ``discord.ui.DynamicItem`` whose ``custom_id`` is
``vqgan:<action>:<job id>``. The bot registers the class once (``add_dynamic_items``), and a
press on any message, however old and from before any restart, is matched by that pattern and
looked up in the job store: nothing is kept per message. What a press does lives in the buttons
cog (``bot.cogs.buttons``); this module only draws the buttons and finds the cog.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal, cast, get_args

import discord
from discord.ext import commands

Action = Literal["rerun", "vary", "edit", "timelapse", "details", "cancel",
                 "zoomout15", "zoomout2", "panleft", "panright", "panup", "pandown"]
ACTIONS: tuple[Action, ...] = get_args(Action)
OUTPAINT_ACTIONS: tuple[Action, ...] = ("zoomout15", "zoomout2", "panleft", "panright", "panup", "pandown")
RESULT_ACTIONS: tuple[Action, ...] = ("rerun", "vary", "edit", "timelapse", "details", *OUTPAINT_ACTIONS)
_LOOK: dict[str, tuple[str | None, str, discord.ButtonStyle]] = {  # label, emoji, style
    "rerun": ("Rerun", "🔁", discord.ButtonStyle.secondary),
    "vary": ("Vary", "🎲", discord.ButtonStyle.secondary),
    "edit": ("Edit", "✏️", discord.ButtonStyle.secondary),
    "timelapse": ("Timelapse", "🎞️", discord.ButtonStyle.secondary),
    "details": ("Details", "ℹ️", discord.ButtonStyle.secondary),
    "cancel": ("Cancel", "❌", discord.ButtonStyle.danger),
    "zoomout15": ("Zoom out 1.5x", "🔍", discord.ButtonStyle.secondary),
    "zoomout2": ("Zoom out 2x", "🔍", discord.ButtonStyle.secondary),
    "panleft": (None, "⬅️", discord.ButtonStyle.secondary),
    "panright": (None, "➡️", discord.ButtonStyle.secondary),
    "panup": (None, "⬆️", discord.ButtonStyle.secondary),
    "pandown": (None, "⬇️", discord.ButtonStyle.secondary),
}
# Discord allows 5 buttons a row and 5 rows. Unlisted actions go in the first row with room (row 0 first).
_ROW: dict[str, int] = {"zoomout15": 1, "zoomout2": 1, "panleft": 2, "panright": 2, "panup": 2, "pandown": 2}
COG = "Buttons"  # the cog that answers presses (bot.cogs.buttons)


def custom_id(action: Action, job_id: str) -> str:
    return f"vqgan:{action}:{job_id}"


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]],
                template=r"vqgan:(?P<action>[a-z0-9]+):(?P<job>[A-Za-z0-9_-]{1,64})"):
    """One button acting on one job; everything it needs is in its ``custom_id``."""

    def __init__(self, action: Action, job_id: str) -> None:
        label, emoji, style = _LOOK[action]
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style,
                                           custom_id=custom_id(action, job_id), row=_ROW.get(action)))
        self.action: Action = action
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str]) -> JobButton:
        action = match["action"]
        if action not in ACTIONS:
            raise ValueError(f"unknown button action {action!r}")  # logged by discord.py, press ignored
        return cls(cast(Action, action), match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        client = interaction.client
        cog: Any = client.get_cog(COG) if isinstance(client, commands.Bot) else None
        if cog is not None:
            await cog.press(interaction, self.action, self.job_id)


def result_view(job_id: str) -> discord.ui.View:
    """Rerun, Vary, Edit, Timelapse and Details for a finished job; Zoom out 1.5x and 2x below them, and
    the four pans (⬅️ ➡️ ⬆️ ⬇️) below those."""
    view = discord.ui.View(timeout=None)
    for action in RESULT_ACTIONS:
        view.add_item(JobButton(action, job_id))
    return view


def status_view(job_id: str) -> discord.ui.View:
    """Cancel, under a job's status message while it waits or runs."""
    view = discord.ui.View(timeout=None)
    view.add_item(JobButton("cancel", job_id))
    return view


class Debounce:
    """At most one press per person, job and action is acted on within ``window`` seconds, so that
    ten quick clicks start one job; the rest are acknowledged silently."""

    def __init__(self, window: float = 3.0) -> None:
        self.window = window
        self._last: dict[tuple[int, str, str], float] = {}

    def first(self, user_id: int, job_id: str, action: str) -> bool:
        now = time.monotonic()
        if len(self._last) > 10_000:  # forget old presses now and then
            self._last = {k: t for k, t in self._last.items() if now - t < self.window}
        key = (user_id, job_id, action)
        last = self._last.get(key)
        if last is not None and now - last < self.window:
            return False
        self._last[key] = now
        return True
