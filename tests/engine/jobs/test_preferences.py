"""People's settings and styles in the job store's file (engine.jobs.preferences), through the public face."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from engine import Preferences, StorageError, Style, UserError, UserSettings, new_style, with_style
from engine.jobs.store import MIGRATIONS, SCHEMA_VERSION, JobStore


def _old_store(path, version: int = 2) -> None:
    """A job store as the release before settings and styles left it, holding one job."""
    db = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:version]:
        step(db)
    db.execute(f"PRAGMA user_version={version}")
    db.execute("INSERT INTO jobs (id, owner, state, request, origin, created_at) VALUES (?, ?, ?, ?, ?, ?)",
               ("0123456789ab", "alice", "finished", "{}", "{}", time.time()))
    db.close()


async def test_an_old_store_gains_the_tables_keeps_its_jobs_and_keeps_what_is_saved(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    _old_store(path)
    prefs = Preferences(path)
    await prefs.open()
    await prefs.save_settings(7, UserSettings(model="wikiart_16384", steps=50, suffix="oil painting"))
    await prefs.save_style(new_style("Oil", "oil painting", owner=7, max_chars=500), max_styles=5)
    await prefs.close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store = JobStore(path)  # the job store opens the migrated file as it is
    assert [r["id"] for r in store.load()] == ["0123456789ab"]
    store.close()
    again = Preferences(path)
    try:
        assert await again.settings("7") == UserSettings(model="wikiart_16384", steps=50, suffix="oil painting")
        assert await again.settings(8) == UserSettings()
        assert await again.style_text(7, None, "OIL") == "oil painting"
    finally:
        await again.close()


async def test_the_style_hook_finds_ones_own_first_then_the_servers_and_nothing_elsewhere(tmp_path):
    prefs = Preferences(tmp_path / "jobs.sqlite3")
    try:
        await prefs.save_style(Style(name="house", text="the server's way", owner="1", guild=99), max_styles=5)
        await prefs.save_style(Style(name="mine", text="only mine", owner="2"), max_styles=5)
        assert await prefs.style_text(2, 99, "house") == "the server's way"
        assert await prefs.style_text(2, 98, "house") is None  # another server's
        assert await prefs.style_text(2, None, "house") is None  # a direct message
        assert await prefs.style_text(3, 99, "mine") is None  # another person's
        await prefs.save_style(Style(name="house", text="my own way", owner="2"), max_styles=5)
        assert await prefs.style_text(2, 99, "house") == "my own way"
        assert await prefs.style_text(2, 99, "not a name!") is None
        with pytest.raises(UserError, match="this server has 1 styles, the most allowed"):
            await prefs.save_style(Style(name="other", text="x", owner="1", guild=99), max_styles=1)
        assert await prefs.delete_style("HOUSE", user=2) and not await prefs.delete_style("house", user=2)
        assert await prefs.style_text(2, 99, "house") == "the server's way"
    finally:
        await prefs.close()


async def test_a_row_another_version_wrote_keeps_what_this_one_reads(tmp_path, caplog):
    path = tmp_path / "jobs.sqlite3"
    prefs = Preferences(path)
    await prefs.open()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO user_settings VALUES (?, ?, ?)",
                   ("5", json.dumps({"version": 2, "steps": 30, "sampler": "new"}), time.time()))
    try:
        assert await prefs.settings(5) == UserSettings(steps=30)
        assert "dropped: sampler, version" in caplog.text
    finally:
        await prefs.close()


async def test_a_file_it_cannot_use_is_one_line(tmp_path):
    (tmp_path / "jobs.sqlite3").write_bytes(b"not a database at all" * 100)
    prefs = Preferences(tmp_path / "jobs.sqlite3")
    with pytest.raises(StorageError, match=r"the job store .*jobs.sqlite3 is damaged"):
        await prefs.open()
    await prefs.close()


def test_a_style_joins_each_part_of_a_prompt_in_its_syntax():
    assert with_style("a castle", "oil painting") == "a castle, oil painting"
    assert with_style("a castle:1|fog:-0.5", "oil painting") == "a castle:1|fog:-0.5|oil painting"
    assert with_style("a forest ^ ashes", "|blurry:-1") == "a forest|blurry:-1 ^ ashes|blurry:-1"
    assert with_style("http://x", "ink") == "http://x, ink"
