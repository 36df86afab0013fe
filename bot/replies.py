"""How the bot answers people: who may be pinged, the private refusal, the self-deleting notice.

One place for each, so that every command and gesture refuses the same way and no prompt text
(``@everyone``, a role) can ever ping anybody. A refusal given as the ``UserError`` that caused it (or
with a ``kind``) is counted by kind (``bot.refusals``), once, here.
"""

from __future__ import annotations

import logging

import discord

from bot import limits
from bot.refusals import count_refusal, refusal_kind
from engine import UserError

log = logging.getLogger(__name__)

# Results ping the person who asked; nothing else ever pings (an @everyone in a prompt, a reply).
MENTIONS = discord.AllowedMentions(everyone=False, roles=False, users=True, replied_user=False)
QUIET = discord.AllowedMentions.none()  # status lines and refusals name people without pinging them


def counted(client: object, reason: str | UserError, kind: str | None) -> str:
    """The text of a refusal, counted (``bot.refusals``) when it is a ``UserError`` or has a ``kind``."""
    if kind is None and isinstance(reason, UserError):
        kind = refusal_kind(reason)
    if kind is not None:
        count_refusal(client, kind)
    return str(reason)


async def refuse(interaction: discord.Interaction, reason: str | UserError, *, kind: str | None = None) -> None:
    """One short line only the asker sees, whatever state the interaction is in: not answered yet,
    answered, or publicly deferred (a public "thinking" message cannot turn private: it is removed).
    ``reason``: the line, or the ``UserError`` that says it (then counted as a refusal of its kind)."""
    text = counted(interaction.client, reason, kind)
    line = limits.fit(f"⚠️ {text}")
    try:
        if interaction.response.type == discord.InteractionResponseType.deferred_channel_message:
            try:
                await interaction.delete_original_response()
            except discord.HTTPException:
                pass
        if interaction.response.is_done():
            await interaction.followup.send(line, ephemeral=True, allowed_mentions=QUIET)
        else:
            await interaction.response.send_message(line, ephemeral=True, allowed_mentions=QUIET)
    except discord.HTTPException as e:
        log.info("could not send a refusal (%s): %s", e.status, text)


async def notice(message: discord.Message | discord.PartialMessage, text: str, delete_after: float) -> None:
    """Gestures cannot answer privately: a short reply that deletes itself (``delete_after`` 0 = keeps).
    A refusal passes its text through ``counted`` first."""
    line = limits.fit(f"⚠️ {text}")
    try:
        if delete_after:
            await message.reply(line, mention_author=False, delete_after=delete_after,
                                allowed_mentions=QUIET)
        else:
            await message.reply(line, mention_author=False, allowed_mentions=QUIET)
    except discord.HTTPException as e:
        log.info("could not post a notice (%s): %s", e.status, text)
