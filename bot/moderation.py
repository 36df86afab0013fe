"""Which prompts a server allows: the configured rules plus the entries its moderators banned.

``Moderation.check`` runs on every text a person can send that paints (a prompt with its story
parts, an edit's region phrase, a reply's or mention's words, the edit forms), and again on each
request just before anything about it is posted (reruns and variations of older results too). A
match raises ``Blocked``: one private line, ``REFUSED``, that never repeats the prompt; it is counted
where it is answered (``bot.replies``: ``bot.refusals``, kind ``moderation``), logged with the whole prompt
in the bot's own log, and posted without the prompt to the log channel (``bot.modlog``).

Moderators' entries (``/moderation ban``) are kept per server in the job store's database
(``engine.BanList``) and held here in memory, so a check never waits for the disk.
"""

from __future__ import annotations

import logging

from bot.access import Refused
from bot.config import BotConfig
from bot.modlog import Asker, ModLog, shown_rule
from bot.refusals import MODERATION
from bot.wordfilter import Rule, WordFilter, check_entry, entry_key
from engine import Ban, BanList, UserError

log = logging.getLogger(__name__)

REFUSED = "this server does not allow that prompt"
MAX_ENTRY_CHARS = 100  # one entry a moderator adds
MAX_ENTRIES = 200  # entries moderators may add per server (/moderation list stays readable)
MODERATORS = "moderators"  # where a stored entry comes from, in the log channel


class Blocked(Refused):
    """A prompt broke a banned word or rule; the message is ``REFUSED`` and nothing else."""

    def __init__(self, rule: Rule) -> None:
        super().__init__(REFUSED, kind=MODERATION)
        self.rule = rule


class Moderation:
    """The rules of each server, the check, and the moderators' changes to the list."""

    def __init__(self, cfg: BotConfig, modlog: ModLog) -> None:
        self.cfg = cfg
        self.modlog = modlog
        self.bans = BanList(cfg.queue.db_path)
        self._stored: dict[str, list[Ban]] = {}  # scope (server id) -> its entries, oldest first
        self._filters: dict[int | None, WordFilter] = {}

    async def open(self) -> None:
        """Read the stored entries (after the job queue has opened, and upgraded, the database)."""
        for ban in await self.bans.open():
            self._stored.setdefault(ban.scope, []).append(ban)
        self._filters.clear()

    async def close(self) -> None:
        await self.bans.close()

    # ------------------------------------------------------------------ the check

    def configured(self, guild_id: int | None) -> list[Rule]:
        return self.cfg.moderation.rules_for(guild_id)

    def stored(self, guild_id: int | None) -> list[Ban]:
        return list(self._stored.get(_scope(guild_id), [])) if guild_id is not None else []

    def _filter(self, guild_id: int | None) -> WordFilter:
        f = self._filters.get(guild_id)
        if f is None:
            rules = self.configured(guild_id) + [Rule(b.entry, MODERATORS) for b in self.stored(guild_id)]
            f = self._filters[guild_id] = WordFilter(rules)
        return f

    def check(self, asker: Asker, *texts: str | None) -> None:
        """Raise ``Blocked`` when one of ``texts`` breaks a rule of the asker's server (None: skipped)."""
        f = self._filter(asker.guild_id)
        if not len(f):
            return
        for text in texts:
            rule = f.match(text) if text else None
            if rule is not None:
                log.info("refused %s of user %s on server %s: %s %r (%s) matched %r", asker.command,
                         asker.user_id, asker.guild_id, rule.kind, rule.entry, rule.source, text)
                self.modlog.refused(asker, rule)
                raise Blocked(rule)

    # ------------------------------------------------------------------ moderators' changes

    async def ban(self, asker: Asker, word: str) -> str:
        """Add ``word`` (or a ``re:`` rule) to the server's list; the answer, or a ``UserError``."""
        guild_id = _guild(asker)
        if len(word) > MAX_ENTRY_CHARS:
            raise UserError(f"an entry is at most {MAX_ENTRY_CHARS} characters")
        try:
            key = check_entry(word)
        except ValueError as e:
            raise UserError(str(e)) from None
        shown = shown_rule(Rule(key))
        if key in {entry_key(r.entry) for r in self.configured(guild_id)}:
            raise UserError(f"{shown} is already banned by the bot's config")
        mine = self._stored.setdefault(_scope(guild_id), [])
        if any(b.entry == key for b in mine):
            raise UserError(f"{shown} is already banned on this server")
        if len(mine) >= MAX_ENTRIES:
            raise UserError(f"this server has {MAX_ENTRIES} banned entries, the most it may have; unban some first")
        ban = await self.bans.add(_scope(guild_id), key, str(asker.user_id))
        if ban is not None:
            mine.append(ban)
        self._filters.pop(guild_id, None)
        self.modlog.changed(asker, "banned", Rule(key))
        log.info("moderator %s banned %r on server %s", asker.user_id, key, guild_id)
        return f"banned {shown} on this server: prompts with it are refused from now on"

    async def unban(self, asker: Asker, word: str) -> str:
        """Remove a moderators' entry of the server; the answer, or a ``UserError``."""
        guild_id = _guild(asker)
        key = entry_key(word)
        shown = shown_rule(Rule(key or word))
        mine = self._stored.get(_scope(guild_id), [])
        if not any(b.entry == key for b in mine):
            if key and key in {entry_key(r.entry) for r in self.configured(guild_id)}:
                raise UserError(f"{shown} is banned by the bot's config; only its operator can lift that")
            raise UserError(f"{shown} is not banned on this server; /moderation list shows what is")
        await self.bans.remove(_scope(guild_id), key)
        self._stored[_scope(guild_id)] = [b for b in mine if b.entry != key]
        self._filters.pop(guild_id, None)
        self.modlog.changed(asker, "unbanned", Rule(key))
        log.info("moderator %s unbanned %r on server %s", asker.user_id, key, guild_id)
        return f"unbanned {shown} on this server"

    def entries(self, guild_id: int | None) -> tuple[list[str], list[str]]:
        """What ``/moderation list`` shows: the moderators' entries (oldest first), and the configured ones."""
        return [b.entry for b in self.stored(guild_id)], [r.entry for r in self.configured(guild_id)]


def _scope(guild_id: int | None) -> str:
    return str(guild_id)


def _guild(asker: Asker) -> int:
    if asker.guild_id is None:
        raise UserError("the banned list is a server's: use this in a server")
    return asker.guild_id
