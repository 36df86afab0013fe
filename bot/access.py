"""Who may ask, and where: servers, channels and roles from the config; moderators; priority by role.

A moderator's rights count only in the server where they hold them, and only for jobs asked there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import discord

from bot import roles
from bot.config import BotConfig
from bot.origin import Origin
from engine import UserError

if TYPE_CHECKING:
    from engine import Job



class Refused(UserError):
    """The person, place or input is not allowed; the message says what to change. ``kind`` is what it
    counts as (``bot.refusals.REFUSAL_KINDS``): by default, someone or somewhere not allowed."""

    def __init__(self, message: str, *, kind: str = "not_allowed") -> None:
        super().__init__(message)
        self.kind = kind


def check_access(cfg: BotConfig, *, guild_id: int | None, channel_id: int | None,
                 parent_id: int | None = None, member: Any = None) -> None:
    """Raise ``Refused`` unless this guild/channel/member may use the bot."""
    d = cfg.discord
    if guild_id is None:
        if not d.allow_dms:
            raise Refused("I only paint in server channels, not in direct messages")
        return
    if d.allowed_guilds and guild_id not in d.allowed_guilds:
        raise Refused("I am not enabled in this server")
    if d.allowed_channels and channel_id not in d.allowed_channels and parent_id not in d.allowed_channels:
        where = ", ".join(f"<#{c}>" for c in d.allowed_channels[:5])
        raise Refused(f"I don't paint in this channel: try {where}")
    if d.allowed_roles:
        if not roles.holds_any(cfg, d.allowed_roles, member, guild_id) and not is_admin(member):
            raise Refused("you need one of the roles allowed to use me; ask a moderator")


def is_admin(member: Any) -> bool:
    perms = getattr(member, "guild_permissions", None)
    return bool(perms and perms.administrator)


def is_moderator(cfg: BotConfig, member: Any, guild_id: int | None) -> bool:
    """A moderator of server ``guild_id`` (where ``member`` is acting): Administrator there, or one of
    ``moderator_roles`` of that server (``bot.roles``). Nobody moderates in direct messages."""
    if member is None or guild_id is None:
        return False
    return is_admin(member) or roles.holds_any(cfg, cfg.discord.moderator_roles, member, guild_id)


def moderates(cfg: BotConfig, member: Any, guild_id: int | None, job: Job) -> bool:
    """Whether ``member``, acting on server ``guild_id``, may act on ``job`` as a moderator: only on
    the server the job was asked in (its origin's guild), never from another one."""
    return guild_id is not None and guild_of(job) == guild_id and is_moderator(cfg, member, guild_id)


def guild_of(job: Job) -> int | None:
    """The server a job was asked in; None for direct messages and jobs not made by the bot."""
    return Origin.read(job.origin, job.id).guild_id


def priority_for(cfg: BotConfig, member: Any, guild_id: int | None) -> int:
    """``[queue] role_priority``: the highest priority among the member's roles on ``guild_id``."""
    return roles.priority(cfg, member, guild_id)


def check_access_interaction(cfg: BotConfig, interaction: discord.Interaction) -> None:
    ch = interaction.channel
    parent = getattr(ch, "parent_id", None)
    check_access(cfg, guild_id=interaction.guild_id, channel_id=interaction.channel_id,
                 parent_id=parent, member=interaction.user)


def check_access_message(cfg: BotConfig, message: discord.Message) -> None:
    ch = message.channel
    check_access(cfg, guild_id=message.guild.id if message.guild else None, channel_id=ch.id,
                 parent_id=getattr(ch, "parent_id", None), member=message.author)
