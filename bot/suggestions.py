"""/describe's answer: the suggested prompts as a message, and a button per prompt that paints it.

Nothing is stored per answer. A button's ``custom_id`` is ``vqgan-describe:<number>`` (a
``discord.ui.DynamicItem`` registered once at start, so a press on an answer from before a restart is
matched too), and the prompt it paints is read back from the message the button is under: the bot's own
text, written by ``suggestions_text`` and read by ``prompts_in``. What a press does lives in the describe
cog (``bot.cogs.describe``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import discord
from discord.ext import commands

from bot.limits import BUTTON_LABEL, CONTENT, fit, length

COG = "Describe"  # the cog that answers presses
MAX_BUTTONS = 5  # one row
HEADER = "🖼️ **Prompts for this picture** (CLIP's score: higher is closer)"
FOOTER = "-# Press a number to paint that prompt as your own /imagine job."
_LINE = re.compile(r"^\*\*(\d+)\.\*\* `([^`\n]+)` · ")


def custom_id(number: int) -> str:
    return f"vqgan-describe:{number}"


def suggestions_text(suggestions: Sequence[tuple[str, float]], limit: int = CONTENT) -> tuple[str, int]:
    """The answer's text for ``(prompt, score)`` pairs, best first, and how many it shows: as many as fit in
    ``limit`` (and ``MAX_BUTTONS``), whole; a prompt is never cut, since its button paints what is shown."""
    lines = [HEADER]
    shown = 0
    for number, (prompt, score) in enumerate(suggestions[:MAX_BUTTONS], 1):
        clean = " ".join(prompt.replace("`", "'").split())
        line = f"**{number}.** `{clean}` · {score:.3f}"
        if length("\n".join([*lines, line, FOOTER])) > limit:
            break
        lines.append(line)
        shown = number
    return "\n".join([*lines, FOOTER]) if shown else fit(HEADER, limit), shown


def prompts_in(content: str) -> dict[int, str]:
    """The prompts of an answer written by ``suggestions_text``, by number."""
    return {int(m[1]): m[2] for line in content.splitlines() if (m := _LINE.match(line))}


class PaintButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"vqgan-describe:(?P<number>[1-9])"):
    """Paints suggestion ``number`` of the answer it is under."""

    def __init__(self, number: int) -> None:
        super().__init__(discord.ui.Button(label=fit(f"Paint {number}", BUTTON_LABEL), emoji="🎨",
                                           style=discord.ButtonStyle.secondary, custom_id=custom_id(number)))
        self.number = number

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item[Any],
                             match: re.Match[str]) -> PaintButton:
        return cls(int(match["number"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        client = interaction.client
        cog: Any = client.get_cog(COG) if isinstance(client, commands.Bot) else None
        if cog is not None:
            await cog.paint(interaction, self.number)


def paint_view(count: int) -> discord.ui.View:
    """A Paint button for each of the first ``count`` suggestions."""
    view = discord.ui.View(timeout=None)
    for number in range(1, min(count, MAX_BUTTONS) + 1):
        view.add_item(PaintButton(number))
    return view
