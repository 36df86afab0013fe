"""A job's Discord coordinates (``bot.origin.Origin``) as the queue stores them, old and odd rows included."""

from __future__ import annotations

import logging

import pytest

from bot.origin import Origin
from engine.spec.request import Request
from tests.bot.conftest import FakeRunner, make_config, results, run_bot, wait_results


def _request() -> Request:
    return Request(prompt="a lighthouse", steps=2, width=32, height=32, seed=3)


async def test_a_job_submitted_by_the_bot_stores_a_versioned_origin(fake, tmp_path):
    async with run_bot(fake, make_config(tmp_path, fake), FakeRunner()) as bot:
        alice = fake.add_user("alice")
        inter = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a windmill", "steps": 2})
        [result] = await wait_results(fake)
        job = await fake.wait_for(lambda: bot.queue.find(result_message_id=result.id))
        origin = Origin.model_validate(job.origin)
        assert origin.version == 1 and origin.user_id == alice.id and origin.channel_id == fake.channel.id
        assert origin.status_message_id == inter.original.id and origin.thread_id == result.channel_id


async def test_a_job_stored_by_the_previous_bot_is_still_delivered(fake, tmp_path):
    """Rows written before ``Origin`` existed: no version, every key written, None included."""
    async with run_bot(fake, make_config(tmp_path, fake), FakeRunner()) as bot:
        bob = fake.add_user("bob")
        old = {"guild_id": fake.guild_id, "channel_id": fake.channel.id, "status_message_id": None,
               "status_channel_id": fake.channel.id, "thread_id": None, "reply_to": None, "user_id": bob.id,
               "note": None}
        job, _ = await bot.queue.submit(_request(), owner=str(bob.id), origin=old)
        [result] = await wait_results(fake)
        assert result.channel_id == fake.channel.id and f"<@{bob.id}>" in result.content
        assert (await fake.wait_for(lambda: bot.queue.find(result_message_id=result.id))).id == job.id


async def test_an_origin_the_bot_cannot_read_still_gets_its_result_posted(fake, tmp_path, caplog):
    """Like a stored job the queue cannot read: what validates is kept, the rest dropped with a warning,
    and the result goes where it still can (here: the channel, as the thread id is garbage)."""
    caplog.set_level(logging.WARNING, logger="bot.origin")
    async with run_bot(fake, make_config(tmp_path, fake), FakeRunner()) as bot:
        carol = fake.add_user("carol")
        odd = {"version": 1, "channel_id": fake.channel.id, "thread_id": "the old thread", "user_id": carol.id,
               "colour": "teal"}
        await bot.queue.submit(_request(), owner=str(carol.id), origin=odd)
        [result] = await wait_results(fake)
        assert result.channel_id == fake.channel.id
    assert "keeping what can be read (dropped: colour, thread_id)" in caplog.text
    assert len(results(fake)) == 1


def test_origin_reads_anything_without_raising_and_annotations_are_checked():
    assert Origin.read(None) == Origin() and Origin.read([1, 2]) == Origin()
    later = Origin.read({"version": 2, "channel_id": 5, "thread_id": 6})  # a later layout: keep what still fits
    assert (later.version, later.channel_id, later.thread_id) == (1, 5, 6)
    assert Origin.read({"channel_id": "5"}).channel_id == 5  # pydantic's usual coercion of JSON-ish values
    assert Origin(channel_id=5, note=None).stored() == {"version": 1, "channel_id": 5}
    assert Origin.changes(thread_id=None, result_message_id=7) == {"thread_id": None, "result_message_id": 7}
    with pytest.raises(ValueError, match="result_mesage_id"):
        Origin.changes(result_mesage_id=7)
