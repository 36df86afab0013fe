"""Which configured roles a member holds, counted only on the servers the config means.

``allowed_roles``, ``moderator_roles`` and ``[queue] role_priority`` name roles. A role id is
unique across Discord, but a name is not: the owner of any server the bot is in can make a role
called "Patron". So the rule is:

* an id (a number, or digits in quotes) matches that one role;
* ``"GUILD_ID/Name"`` matches the role of that name on that server only;
* a bare ``"Name"`` matches only on the servers listed in ``[discord] guilds`` or
  ``allowed_guilds``. With neither set it matches nowhere, and ``warnings`` says so at start-up:
  failing closed is the only safe reading, since any server could hold a role of that name.

No discord import here: a member is anything with ``roles`` (objects with ``id`` and ``name``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.config import BotConfig, RoleRef


@dataclass(frozen=True)
class RoleRule:
    """One configured role: by id, or by name on one server (``guild_id``) or on the listed ones (None)."""

    role_id: int | None = None
    name: str | None = None
    guild_id: int | None = None

    @classmethod
    def parse(cls, ref: RoleRef) -> RoleRule:
        if isinstance(ref, int):
            return cls(role_id=ref)
        text = ref.strip()
        if text.isdigit():
            return cls(role_id=int(text))
        guild, sep, name = text.partition("/")
        if sep and guild.strip().isdigit() and name.strip():
            return cls(name=name.strip(), guild_id=int(guild))
        return cls(name=text)

    def matches(self, role: Any, guild_id: int | None, name_guilds: Iterable[int]) -> bool:
        """Whether ``role``, a role of server ``guild_id``, is this one."""
        if self.role_id is not None:
            return getattr(role, "id", None) == self.role_id
        if guild_id is None or getattr(role, "name", None) != self.name:
            return False
        return guild_id == self.guild_id if self.guild_id is not None else guild_id in name_guilds


def name_guilds(cfg: BotConfig) -> set[int]:
    """The servers where a bare role name counts: those the config lists."""
    return {*cfg.discord.guilds, *cfg.discord.allowed_guilds}


def _roles(member: Any) -> list[Any]:
    return list(getattr(member, "roles", None) or [])


def holds_any(cfg: BotConfig, refs: Iterable[RoleRef], member: Any, guild_id: int | None) -> bool:
    """Whether ``member`` (as a member of server ``guild_id``) holds one of these roles."""
    rules = [RoleRule.parse(r) for r in refs]
    where = name_guilds(cfg)
    return any(rule.matches(role, guild_id, where) for role in _roles(member) for rule in rules)


def priority(cfg: BotConfig, member: Any, guild_id: int | None) -> int:
    """``[queue] role_priority``: the highest value among the member's roles on ``guild_id``; 0 if none."""
    table = cfg.queue.role_priority
    if not table or member is None:
        return 0
    where = name_guilds(cfg)
    rules = [(RoleRule.parse(key), value) for key, value in table.items()]
    return max((value for role in _roles(member) for rule, value in rules if rule.matches(role, guild_id, where)),
               default=0)


def warnings(cfg: BotConfig) -> list[str]:
    """Start-up warnings: bare role names that match nowhere, because no server is listed."""
    if name_guilds(cfg):
        return []
    d = cfg.discord
    out = []
    for key, refs in (("[discord] allowed_roles", d.allowed_roles), ("[discord] moderator_roles", d.moderator_roles),
                      ("[queue] role_priority", list(cfg.queue.role_priority))):
        bare = [str(r) for r in refs if (rule := RoleRule.parse(r)).name is not None and rule.guild_id is None]
        if bare:
            out.append(f"{key} names roles ({', '.join(repr(b) for b in bare)}) but neither [discord] guilds nor "
                       "allowed_guilds lists a server, so these names match no role (any server could have a role "
                       "of that name): list your server ids, or write role ids or 'SERVER_ID/Name'")
    return out
