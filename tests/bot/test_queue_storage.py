"""The bot and the job store: a store it cannot open is one line at start-up; tokens are not kept."""

from __future__ import annotations

import asyncio
import sqlite3

import discord
import pytest

from bot.__main__ import main as bot_main
from tests.bot.conftest import FakeRunner, make_config, run_bot, submitted, wait_results


async def test_a_damaged_job_store_stops_the_bot_with_one_line(fake, tmp_path, monkeypatch, capsys):
    db = tmp_path / "jobs.sqlite3"
    junk = b"not a database at all\n" * 300
    db.write_bytes(junk)
    cfg = tmp_path / "config.toml"
    cfg.write_text(f'[queue]\ndb_path = "{db}"\nresults_dir = "{tmp_path / "results"}"\n\n'
                   f'[discord]\ndata_dir = "{tmp_path / "discord"}"\n')
    monkeypatch.setenv("DISCORD_TOKEN", "fake-token")
    monkeypatch.setenv("DISCORD_API_BASE", fake.api_base)
    monkeypatch.setattr(discord.utils, "setup_logging", lambda **kwargs: None)  # leave pytest's logging be
    # `python -m bot` (its own event loop, in a thread, so that the fake Discord keeps answering here)
    rc = await asyncio.wait_for(asyncio.to_thread(bot_main, ["--config", str(cfg)]), 60)
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith(f"error: the job store {db} is damaged") and err.count("\n") == 1, err
    assert "move it aside" in err
    assert db.read_bytes() == junk  # nothing already stored is touched


async def test_the_interaction_token_is_stored_for_its_15_minutes_only(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        alice = fake.add_user("alice")
        inter = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a lighthouse", "steps": 4})
        job = await submitted(fake, bot, inter)
        assert job.origin["interaction_token"]
        assert job.forget_at == {"interaction_token": pytest.approx(job.created_at + 15 * 60)}
        await wait_results(fake)


async def test_tokens_an_older_version_stored_are_dropped_at_start(fake, tmp_path):
    from engine.queue import JobQueue
    from engine.spec.request import Request

    cfg = make_config(tmp_path, fake)
    q = JobQueue(cfg, runner=FakeRunner())
    await q.start()
    job, _ = await q.submit(Request(prompt="old", steps=4, width=64, height=64), "1",
                            origin={"interaction_token": "OLD-TOKEN", "channel_id": 1})
    await q.cancel(job.id, by="1")
    await q.close()
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:  # an hour old, stored without an expiry
        db.execute("UPDATE jobs SET created_at=created_at-3600, forget_at='{}'")
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        assert "interaction_token" not in bot.queue.get(job.id).origin
    assert not any(b"OLD-TOKEN" in p.read_bytes() for p in tmp_path.glob("jobs.sqlite3*"))
