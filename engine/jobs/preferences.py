"""Each person's defaults (``UserSettings``) and named prompt endings (``Style``), kept beside the jobs.

They live in the job store's own SQLite file (``queue.db_path``, opened and migrated by
``engine.jobs.store.connect``), so they are kept across restarts and backed up with the queue; with
``backend = "redis"`` that file is still the front end's (the coordinator's), never a worker's.

What is stored is a versioned pydantic model per row. A row this version cannot read (another
version's, a damaged one) is read like a job's origin is: what still validates is kept, with one
warning, and nothing raises. Every database call runs on one thread of its own, in order, so the
event loop never waits on the disk; failures are ``StorageError`` lines naming the file.

A style is one person's (``guild`` None), seen wherever they paint, or a server's (made by its
moderators), seen by everyone on that server; one's own style wins over a server style of the same
name. The front end checks values against the server's rules before saving them (the bot builds a
request from them); this module checks only what makes a style a style (its name and text).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engine.errors import StorageError, UserError, quoted
from engine.jobs.store import connect, storage_problem
from engine.spec.prompts import STORY_SEP, parse_one, visible

log = logging.getLogger(__name__)

MAX_STYLE_NAME = 32  # characters in a style's name (Discord shows them as choices)
_NAME = re.compile(r"[\w-]+")
T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)


class UserSettings(BaseModel):
    """One person's defaults: an option given in a command wins over these, these over ``config.toml``.
    ``None`` (and an empty suffix) means "the server's default"."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    model: str | None = Field(None, max_length=200)  # a VQGAN among [models] vqgan_choices
    clip: str | None = Field(None, max_length=1000)  # a CLIP model or ensemble among clip_choices
    size: tuple[int, int] | None = None  # width, height in pixels; wins over aspect
    aspect: str | None = Field(None, max_length=32)  # a shape the front end names (the bot's square, wide, ...)
    steps: int | None = Field(None, ge=1)
    grid: int | None = Field(None, ge=1)  # pictures per request, where the front end paints grids
    timelapse: bool = False  # also post the video of the picture forming
    suffix: str = Field("", max_length=10_000)  # appended to every prompt, as a style is (``with_style``)

    def is_default(self) -> bool:
        return self == UserSettings()


class Style(BaseModel):
    """A named ending for prompts (``--style NAME``, ``/imagine style:NAME``): one person's or a server's."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    name: str = Field(min_length=1, max_length=MAX_STYLE_NAME)  # as ``style_name`` leaves it
    text: str = Field(min_length=1)
    owner: str  # who saved it
    guild: int | None = None  # a server's style (its moderators make them); None: the owner's own

    @property
    def scope(self) -> str:
        return scope_of(self.owner, self.guild)


def scope_of(owner: str | int, guild: int | None) -> str:
    """The key a style is filed under: a server's, or one person's."""
    return f"guild:{guild}" if guild is not None else f"user:{owner}"


def style_name(name: str) -> str:
    """A style's name as it is filed (case does not matter), or a ``UserError`` line saying what one is."""
    clean = name.strip().casefold()
    if not clean or len(clean) > MAX_STYLE_NAME or not _NAME.fullmatch(clean):
        raise UserError(f"a style name is 1 to {MAX_STYLE_NAME} letters, digits, '-' or '_' "
                        f"(got {quoted(name.strip()[:MAX_STYLE_NAME + 10])})")
    return clean


def new_style(name: str, text: str, *, owner: str | int, guild: int | None = None, max_chars: int) -> Style:
    """A style to save, refused in one line: a bad name, no text, a story, or longer than a prompt may be."""
    text = " ".join(text.split())
    if not visible(text):
        raise UserError("a style needs some text, e.g. 'oil painting, dramatic lighting'")
    if len(text) > max_chars:
        raise UserError(f"a style's text is at most {max_chars} characters (got {len(text)})")
    if STORY_SEP in text:
        raise UserError(f"a style's text cannot hold a story ({STORY_SEP!r}): it is added to each part of one")
    return Style(name=style_name(name), text=text, owner=str(owner), guild=guild)


def with_style(prompt: str, text: str) -> str:
    """``prompt`` with a style's (or the settings' suffix's) ``text`` added to each part of a story:
    after a comma (``a castle`` -> ``a castle, oil painting``), or as a prompt of its own (``|text``) when
    the part has several prompts or a weight, or the text starts with ``|`` (e.g. ``|blurry:-1``)."""
    text = text.strip()
    if not text:
        return prompt
    parts = []
    for part in prompt.split(STORY_SEP):
        part = part.strip()
        weighted = "|" in part or (visible(part) and _has_weight(part))
        parts.append(part + text if text.startswith("|") else f"{part}|{text}" if weighted else f"{part}, {text}")
    return f" {STORY_SEP} ".join(parts)


def _has_weight(part: str) -> bool:
    try:
        return parse_one(part).text != part.strip()
    except UserError:
        return False


def _read(model: type[M], raw: str, what: str) -> M | None:
    """A stored row's model; what still validates when it does not (one warning), None if nothing does."""
    try:
        data = json.loads(raw)
    except (TypeError, ValueError):
        data = None
    if not isinstance(data, dict):
        log.warning("%s: not a JSON object; ignored", what)
        return None
    try:
        return model.model_validate(data)
    except ValidationError as e:
        bad = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
        log.warning("%s: saved by another version, keeping what can be read (dropped: %s)",
                    what, ", ".join(sorted(bad)) or "everything")
    try:
        return model.model_validate({k: v for k, v in data.items() if k not in bad and k != "version"})
    except ValidationError:
        return None


class Preferences:
    """People's settings and styles in the job store's file; every method is a coroutine whose database
    work runs on this object's own thread (opened there on first use)."""

    def __init__(self, db_path: str | Path) -> None:
        self.path = Path(db_path)
        self._db: sqlite3.Connection | None = None
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="preferences-db")

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread, functools.partial(fn, *args))

    def _run(self, sql: str, args: Any = ()) -> list[sqlite3.Row]:
        """On the thread: one statement, committed; its rows."""
        if self._db is None:
            self._db = connect(self.path)
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise StorageError(storage_problem(e, self.path)) from e

    async def open(self) -> None:
        """Open (and migrate) the file now, so that a start fails at once on a file it cannot use."""
        await self._call(self._run, "SELECT 1")

    async def close(self) -> None:
        def close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._call(close)
        self._thread.shutdown()

    # -- settings ----------------------------------------------------------------------------------

    async def settings(self, user: str | int) -> UserSettings:
        """``user``'s settings (the defaults when they saved none)."""
        rows = await self._call(self._run, "SELECT settings FROM user_settings WHERE user_id=?", (str(user),))
        found = _read(UserSettings, rows[0][0], f"settings of {user}") if rows else None
        return found or UserSettings()

    async def save_settings(self, user: str | int, settings: UserSettings) -> None:
        """Keep ``settings`` for ``user`` (the defaults: forget them)."""
        if settings.is_default():
            await self.reset_settings(user)
            return
        await self._call(self._run, "INSERT INTO user_settings (user_id, settings, updated_at) VALUES (?, ?, ?) "
                         "ON CONFLICT(user_id) DO UPDATE SET settings=excluded.settings, "
                         "updated_at=excluded.updated_at", (str(user), settings.model_dump_json(), time.time()))

    async def reset_settings(self, user: str | int) -> None:
        await self._call(self._run, "DELETE FROM user_settings WHERE user_id=?", (str(user),))

    # -- styles --------------------------------------------------------------------------------------

    def _styles_in(self, *scopes: str) -> list[Style]:
        marks = ", ".join("?" * len(scopes))
        rows = self._run(f"SELECT scope, name, style FROM styles WHERE scope IN ({marks}) ORDER BY name", scopes)
        found = [_read(Style, r["style"], f"style {r['name']} of {r['scope']}") for r in rows]
        return [s for s in found if s is not None]

    async def styles(self, user: str | int, guild: int | None = None) -> tuple[list[Style], list[Style]]:
        """(``user``'s own styles, server ``guild``'s styles), each by name."""
        scopes = [scope_of(user, None)] + ([scope_of(user, guild)] if guild is not None else [])
        found = await self._call(self._styles_in, *scopes)
        return [s for s in found if s.guild is None], [s for s in found if s.guild is not None]

    async def style(self, user: str | int, guild: int | None, name: str) -> Style | None:
        """The style ``user`` means by ``name`` on server ``guild``: their own, else the server's."""
        try:
            key = style_name(name)
        except UserError:
            return None
        scopes = [scope_of(user, None)] + ([scope_of(user, guild)] if guild is not None else [])
        found = [s for s in await self._call(self._styles_in, *scopes) if s.name == key]
        return min(found, key=lambda s: s.guild is not None, default=None)  # one's own first

    async def style_text(self, user: str | int, guild: int | None, name: str) -> str | None:
        """What ``--style NAME`` adds for ``user`` on server ``guild`` (None in a direct message), or None
        when they have no such style: the hook a prompt's parameters resolve a style name through."""
        found = await self.style(user, guild, name)
        return found.text if found is not None else None

    def _save_style(self, style: Style, max_styles: int) -> bool:
        rows = self._run("SELECT name FROM styles WHERE scope=?", (style.scope,))
        names = {r[0] for r in rows}
        if style.name not in names and len(names) >= max_styles:
            whose = "this server has" if style.guild is not None else "you have"
            raise UserError(f"{whose} {len(names)} styles, the most allowed; /style delete one first")
        self._run("INSERT INTO styles (scope, name, style, updated_at) VALUES (?, ?, ?, ?) "
                  "ON CONFLICT(scope, name) DO UPDATE SET style=excluded.style, updated_at=excluded.updated_at",
                  (style.scope, style.name, style.model_dump_json(), time.time()))
        return style.name in names

    async def save_style(self, style: Style, *, max_styles: int) -> bool:
        """Save ``style`` (one of the same name and owner is replaced); True when it replaced one.
        A ``UserError`` when its owner (or server) has ``max_styles`` others already."""
        return await self._call(self._save_style, style, max_styles)

    async def delete_style(self, name: str, *, user: str | int, guild: int | None = None) -> bool:
        """Delete ``user``'s style ``name`` (``guild`` given: that server's); whether there was one."""
        try:
            key = style_name(name)
        except UserError:
            return False
        rows = await self._call(self._run, "DELETE FROM styles WHERE scope=? AND name=? RETURNING name",
                                (scope_of(user, guild), key))
        return bool(rows)
