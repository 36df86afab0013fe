"""The buttons under results and status messages: what they look like and what their ids carry.

Every button is one ``JobButton``: a ``discord.ui.DynamicItem`` whose ``custom_id`` is
``vqgan:<action>:<job id>`` (under a grid, ``u1``..``u9`` and ``v1``..``v9`` name a candidate). The bot registers the class once (``add_dynamic_items``), and a
press on any message, however old and from before any restart, is matched by that pattern and
looked up in the job store: nothing is kept per message. What a press does lives in the buttons
cog (``bot.cogs.buttons``); this module only draws the buttons and finds the cog.
"""

from __future__ import annotations

import re
import time
from typing import Any, Literal, get_args

import discord
from discord.ext import commands

from engine import GRID_SIZES

Action = Literal["rerun", "vary", "edit", "timelapse", "details", "cancel", "upscale",
                 "zoomout15", "zoomout2", "panleft", "panright", "panup", "pandown"]
ACTIONS: tuple[Action, ...] = get_args(Action)
OUTPAINT_ACTIONS: tuple[Action, ...] = ("zoomout15", "zoomout2", "panleft", "panright", "panup", "pandown")
RESULT_ACTIONS: tuple[Action, ...] = ("rerun", "vary", "edit", "timelapse", "details", "upscale", *OUTPAINT_ACTIONS)
GRID_ACTIONS: tuple[Action, ...] = ("rerun", "timelapse", "details")  # under a grid, after its U and V rows
MAX_CANDIDATES = max(GRID_SIZES)
CANDIDATE_ACTIONS = tuple(f"{k}{i}" for k in "uv" for i in range(1, MAX_CANDIDATES + 1))  # U1..U9 V1..V9
_LOOK: dict[str, tuple[str | None, str | None, discord.ButtonStyle]] = {  # label, emoji, style
    "rerun": ("Rerun", "🔁", discord.ButtonStyle.secondary),
    "vary": ("Vary", "🎲", discord.ButtonStyle.secondary),
    "edit": ("Edit", "✏️", discord.ButtonStyle.secondary),
    "timelapse": ("Timelapse", "🎞️", discord.ButtonStyle.secondary),
    "details": ("Details", "ℹ️", discord.ButtonStyle.secondary),
    "cancel": ("Cancel", "❌", discord.ButtonStyle.danger),
    "upscale": ("Upscale", "✨", discord.ButtonStyle.secondary),
    "zoomout15": ("Zoom out 1.5x", "🔍", discord.ButtonStyle.secondary),
    "zoomout2": ("Zoom out 2x", "🔍", discord.ButtonStyle.secondary),
    "panleft": (None, "⬅️", discord.ButtonStyle.secondary),
    "panright": (None, "➡️", discord.ButtonStyle.secondary),
    "panup": (None, "⬆️", discord.ButtonStyle.secondary),
    "pandown": (None, "⬇️", discord.ButtonStyle.secondary),
    **{f"u{i}": (f"U{i}", None, discord.ButtonStyle.primary) for i in range(1, MAX_CANDIDATES + 1)},
    **{f"v{i}": (f"V{i}", None, discord.ButtonStyle.secondary) for i in range(1, MAX_CANDIDATES + 1)},
}
# Discord allows 5 buttons a row and 5 rows: under a single picture Upscale and the zooms share the second row,
# the pans the third; unlisted actions go in the first row with room.
_ROW: dict[str, int] = {"upscale": 1, "zoomout15": 1, "zoomout2": 1, "panleft": 2, "panright": 2, "panup": 2,
                        "pandown": 2}
COG = "Buttons"  # the cog that answers presses (bot.cogs.buttons)


def custom_id(action: str, job_id: str) -> str:
    return f"vqgan:{action}:{job_id}"


def candidate_action(action: str) -> tuple[Literal["upscale", "vary"], int] | None:
    """``u3`` -> ("upscale", 3), ``v2`` -> ("vary", 2): a button on one candidate of a grid; None otherwise."""
    if action not in CANDIDATE_ACTIONS:
        return None
    return ("upscale" if action[0] == "u" else "vary"), int(action[1:])


class JobButton(discord.ui.DynamicItem[discord.ui.Button[Any]],
                template=r"vqgan:(?P<action>[a-z0-9]+):(?P<job>[A-Za-z0-9_-]{1,64})"):
    """One button acting on one job; everything it needs is in its ``custom_id``."""

    def __init__(self, action: str, job_id: str, row: int | None = None) -> None:
        label, emoji, style = _LOOK[action]
        super().__init__(discord.ui.Button(label=label, emoji=emoji, style=style,
                                           custom_id=custom_id(action, job_id),
                                           row=row if row is not None else _ROW.get(action)))
        self.action = action  # an ``Action`` or one of ``CANDIDATE_ACTIONS``
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str]) -> JobButton:
        action = match["action"]
        if action not in ACTIONS and action not in CANDIDATE_ACTIONS:
            raise ValueError(f"unknown button action {action!r}")  # logged by discord.py, press ignored
        return cls(action, match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        client = interaction.client
        cog: Any = client.get_cog(COG) if isinstance(client, commands.Bot) else None
        if cog is not None:
            await cog.press(interaction, self.action, self.job_id)


def result_view(job_id: str) -> discord.ui.View:
    """Rerun, Vary, Edit, Timelapse and Details for a finished job; Upscale, Zoom out 1.5x and 2x below them,
    and the four pans (⬅️ ➡️ ⬆️ ⬇️) below those."""
    view = discord.ui.View(timeout=None)
    for action in RESULT_ACTIONS:
        view.add_item(JobButton(action, job_id))
    return view


def grid_view(job_id: str, n: int) -> discord.ui.View:
    """Under a grid of ``n``: U1..Un (upscale that candidate), V1..Vn (a variation of it), then Rerun (a new
    grid), Timelapse and Details; each kind in rows of at most 5 (Discord allows 5 rows of 5)."""
    view = discord.ui.View(timeout=None)
    per_row = -(-n // -(-n // 5))  # n spread evenly over as few rows as hold it: 6 -> 3 + 3, 9 -> 5 + 4
    row = 0
    for kind in "uv":
        for i in range(1, n + 1):
            view.add_item(JobButton(f"{kind}{i}", job_id, row=row + (i - 1) // per_row))
        row += -(-n // per_row)
    for action in GRID_ACTIONS:
        view.add_item(JobButton(action, job_id, row=row))
    return view


def finished_view(job_id: str, grid: int) -> discord.ui.View:
    """The buttons under a finished job's picture: a grid's, or a single picture's."""
    return grid_view(job_id, grid) if grid > 1 else result_view(job_id)


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
