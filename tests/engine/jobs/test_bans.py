"""Moderators' banned entries live in the job store's file, per scope, across restarts."""

from __future__ import annotations

import sqlite3

from engine import BanList
from engine.jobs.store import SCHEMA_VERSION, JobStore


async def test_entries_are_kept_per_scope_beside_the_jobs_and_survive_a_restart(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    jobs = JobStore(path)  # the queue opens (and upgrades) the file first
    bans = BanList(path)
    assert await bans.open() == []
    added = await bans.add("1", "gore", "mod")
    assert added is not None and (added.scope, added.entry, added.by) == ("1", "gore", "mod")
    assert await bans.add("1", "gore", "someone else") is None  # already there
    assert await bans.add("2", "gore", "mod") is not None  # another server's own list
    assert await bans.add("1", "re:sp[i1]ders?", "mod") is not None
    assert await bans.remove("2", "gore") and not await bans.remove("2", "gore")
    await bans.close()
    await bans.close()  # twice is harmless
    assert jobs.load() == []  # the jobs table is untouched
    jobs.close()

    again = BanList(path)  # a restart
    assert [(b.scope, b.entry) for b in await again.open()] == [("1", "gore"), ("1", "re:sp[i1]ders?")]
    await again.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 3
