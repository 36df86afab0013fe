"""Entries moderators banned, per scope, kept in the job store's database (table ``banned``).

The engine matches nothing here: it keeps the list a front end's moderators edit (the bot's
``/moderation ban``; its scope is a server id) across restarts, beside the jobs, in the same file
(``queue.db_path``) and the same schema versions (``engine.jobs.store.MIGRATIONS``). Every call runs
on a thread of its own, in order, so the event loop never waits for the disk; failures are one-line
``StorageError``s naming the file.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ConfigDict

from engine.errors import StorageError
from engine.jobs.store import connect, storage_problem

T = TypeVar("T")


class Ban(BaseModel):
    """One banned entry of one scope, who added it and when (a row of ``banned``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    scope: str
    entry: str
    by: str
    at: float


class BanList:
    """The ``banned`` table in and out. ``open`` first (after the job queue has started, which
    upgrades the file), ``close`` last; once closed it stays closed."""

    def __init__(self, db_path: str | Path) -> None:
        self.path = Path(db_path)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="bans-db")
        self._db: sqlite3.Connection | None = None

    async def _call(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, functools.partial(fn, *args))

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> sqlite3.Cursor:
        if self._db is None:
            raise StorageError(f"the banned list in {self.path} is not open")
        try:
            return self._db.execute(sql, args)
        except sqlite3.Error as e:
            raise StorageError(storage_problem(e, self.path)) from e

    async def open(self) -> list[Ban]:
        """Open the file and return every stored entry, oldest first."""
        def opened() -> list[Ban]:
            self._db = connect(self.path)
            return self._all()
        return await self._call(opened)

    def _all(self) -> list[Ban]:
        rows = self._run("SELECT scope, entry, added_by, added_at FROM banned ORDER BY added_at, rowid")
        return [Ban(scope=s, entry=e, by=b, at=a) for s, e, b, a in rows]

    async def add(self, scope: str, entry: str, by: str) -> Ban | None:
        """Store ``entry`` for ``scope``; None when it is there already."""
        ban = Ban(scope=scope, entry=entry, by=by, at=time.time())
        cur = await self._call(self._run, "INSERT OR IGNORE INTO banned (scope, entry, added_by, added_at) "
                               "VALUES (?, ?, ?, ?)", (ban.scope, ban.entry, ban.by, ban.at))
        return ban if cur.rowcount else None

    async def remove(self, scope: str, entry: str) -> bool:
        """Drop ``entry`` of ``scope``; False when it was not there."""
        cur = await self._call(self._run, "DELETE FROM banned WHERE scope=? AND entry=?", (scope, entry))
        return bool(cur.rowcount)

    async def close(self) -> None:
        if self._db is None:
            return

        def closed() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None
        await self._call(closed)
        self._pool.shutdown(wait=False)
