"""Discord errors never cost a job its result: 429s, 5xx, deleted threads, missing permissions."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
import time

import pytest
from PIL import Image, PngImagePlugin

from engine.media.imageio import META_KEY
from tests.bot.conftest import (
    FakeRunner,
    make_config,
    png,
    progress_posts,
    results,
    run_bot,
    submitted,
    wait_ephemeral,
    wait_results,
)
from tests.fleet import FakeWorker, RedisServer, needs_redis


async def _held_job(fake, tmp_path, **discord_section):
    cfg = make_config(tmp_path, fake, **discord_section)
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    return cfg, runner, hold


async def _start(fake, bot, prompt="a windmill"):
    user = fake.add_user("alice")
    inter = await fake.slash(user, fake.channel, "imagine", {"prompt": prompt, "steps": 4})
    await fake.wait_for(lambda: inter.original and bot.queue.find(status_message_id=inter.original.id))
    return inter, bot.queue.find(status_message_id=inter.original.id)


async def test_429_on_posting_is_waited_out(fake, tmp_path):
    cfg, runner, hold = await _held_job(fake, tmp_path)
    async with run_bot(fake, cfg, runner) as bot:
        inter, job = await _start(fake, bot)
        thread = fake.thread_for(inter.original)
        fake.fail_next("POST", rf"/channels/{thread.id}/messages$", status=429, retry_after=0.3, count=2)
        fake.fail_next("PATCH", r"/messages/", status=429, retry_after=0.2)
        hold.set()
        [result] = await wait_results(fake)
        assert result.channel_id == thread.id
        assert [r.status for r in fake.requests_to("POST", rf"/channels/{thread.id}/messages$")][:2] == [429, 429]


async def test_a_5xx_is_retried(fake, tmp_path):
    # discord.py retries 5xx itself (1 s, 3 s, ...); a persistent one ends in the channel fallback,
    # the same path as the deleted-thread test below.
    cfg, runner, hold = await _held_job(fake, tmp_path)
    async with run_bot(fake, cfg, runner) as bot:
        inter, job = await _start(fake, bot)
        thread = fake.thread_for(inter.original)
        fake.fail_next("POST", rf"/channels/{thread.id}/messages$", status=502, count=1)
        hold.set()
        [result] = await wait_results(fake, timeout=10)
        assert result.channel_id == thread.id
        assert fake.requests_to("POST", rf"/channels/{thread.id}/messages$")[0].status == 502


async def test_thread_deleted_mid_job_posts_in_the_channel(fake, tmp_path):
    cfg, runner, hold = await _held_job(fake, tmp_path)
    async with run_bot(fake, cfg, runner) as bot:
        inter, job = await _start(fake, bot)
        thread = fake.thread_for(inter.original)
        await fake.delete_channel(thread)
        hold.set()
        [result] = await wait_results(fake)
        assert result.channel_id == fake.channel.id
        assert bot.queue.get(job.id).origin["thread_id"] is None
        assert all(p.channel_id == fake.channel.id for p in progress_posts(fake))


async def test_status_message_deleted_mid_job_still_delivers(fake, tmp_path):
    cfg, runner, hold = await _held_job(fake, tmp_path)
    async with run_bot(fake, cfg, runner) as bot:
        inter, job = await _start(fake, bot)
        await fake.delete_message(inter.original)
        hold.set()
        [result] = await wait_results(fake)
        assert bot.queue.get(job.id).state == "finished" and result


async def test_no_permission_to_make_threads(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    fake.deny_threads(fake.channel)
    async with run_bot(fake, cfg, FakeRunner()):
        user = fake.add_user("bob")
        await fake.slash(user, fake.channel, "imagine", {"prompt": "no threads here", "steps": 2})
        [result] = await wait_results(fake)
        assert result.channel_id == fake.channel.id and fake.threads() == []


async def test_no_channel_access_uses_the_interaction_webhook(fake, tmp_path):
    cfg, runner, hold = await _held_job(fake, tmp_path)
    async with run_bot(fake, cfg, runner) as bot:
        inter, job = await _start(fake, bot)
        thread = fake.thread_for(inter.original)
        await fake.delete_channel(thread)
        await fake.set_permissions(fake.channel, allow=0, deny=["send_messages"])
        hold.set()
        await fake.wait_for(lambda: bot.queue.get(job.id).state == "finished")
        followup = await fake.wait_for(lambda: [m for m in inter.followups if m.attachments])
        assert "seed `" in followup[0].content


async def test_expired_interaction_token_does_not_matter(fake, tmp_path):
    cfg, runner, hold = await _held_job(fake, tmp_path)
    async with run_bot(fake, cfg, runner) as bot:
        inter, job = await _start(fake, bot)
        fake.expire_tokens()
        hold.set()
        [result] = await wait_results(fake)
        await fake.wait_for(lambda: "✅ done" in fake.message(inter.original.id).content)
        assert bot.queue.get(job.id).origin["result_message_id"] == result.id


async def test_progress_is_throttled(fake, tmp_path):
    cfg = make_config(tmp_path, fake, progress_interval_s=60.0)
    runner = FakeRunner(delay=0.01, every=1)
    async with run_bot(fake, cfg, runner):
        user = fake.add_user("bob")
        await fake.slash(user, fake.channel, "imagine", {"prompt": "many steps", "steps": 10})
        await wait_results(fake)
        assert len(progress_posts(fake)) == 1
        edits = [r for r in fake.requests_to("PATCH", r"/messages/") if r.files]
        assert edits == []  # the interval was never reached: posted once, not edited
    assert len(results(fake)) == 1


async def test_an_error_after_a_public_defer_is_shown_only_to_its_author(fake, tmp_path, caplog):
    cfg = make_config(tmp_path, fake)
    uploads = cfg.discord.data_path / "uploads"
    uploads.parent.mkdir(parents=True)
    uploads.write_text("a file where the uploads folder should be")  # storing the upload fails
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        alice = fake.add_user("alice")
        inter = await fake.slash(alice, fake.channel, "edit", {"prompt": "a fur coat"},
                                 attachments={"image": ("cat.png", png(), "image/png")})
        text = await wait_ephemeral(fake, inter)
        assert "something went wrong on my side" in text
        assert inter.deferred and inter.original is not None and inter.original.deleted
        public = [m for m in fake.messages_in(fake.channel) if not m.ephemeral and not m.deleted]
        assert not [m for m in public if "went wrong" in m.content]
        assert not bot.queue.jobs_of(str(alice.id))
    assert "command edit failed" in caplog.text


async def test_one_threads_failing_edits_do_not_hold_another_jobs_messages(fake, tmp_path):
    # Job A's progress edits in its thread are answered 500 (discord.py waits 1 s, then 3 s, before
    # retrying); job B, in its own thread, is delivered meanwhile, and each job's messages keep their order.
    cfg, runner, hold = await _held_job(fake, tmp_path)
    async with run_bot(fake, cfg, runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        inter_a = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a windmill", "steps": 4})
        inter_b = await fake.slash(bob, fake.channel, "imagine", {"prompt": "a lighthouse", "steps": 4})
        job_a, job_b = [await submitted(fake, bot, i) for i in (inter_a, inter_b)]
        thread_a, thread_b = fake.thread_for(inter_a.original), fake.thread_for(inter_b.original)
        fake.fail_next("PATCH", rf"/channels/{thread_a.id}/messages/\d+$", status=500, count=2)
        hold.set()
        [result_b] = await fake.wait_for(lambda: [m for m in results(fake) if m.channel_id == thread_b.id])
        assert not [m for m in results(fake) if m.channel_id == thread_a.id], "A is still retrying"
        assert {r.status for r in fake.requests_to("PATCH", rf"/channels/{thread_a.id}/messages/")} == {500}
        assert bot.queue.get(job_a.id).state == "finished"  # A ran first, yet B is shown first
        await fake.wait_for(lambda: "✅ done" in fake.message(inter_b.original.id).content)

        [result_a] = await fake.wait_for(lambda: [m for m in results(fake) if m.channel_id == thread_a.id], 10)
        for thread, result in ((thread_a, result_a), (thread_b, result_b)):
            posts = [m for m in fake.messages_in(thread) if m.author.id == fake.bot_user.id and m.attachments]
            assert [m.attachments[0].filename.split("-")[0] for m in posts] == ["progress", "vqgan"]
            assert posts[-1].id == result.id
        await fake.wait_for(lambda: "✅ done" in fake.message(inter_a.original.id).content)
        assert bot.queue.get(job_b.id).origin["result_message_id"] == result_b.id


# ------------------------------------------------------------------ results a worker sends back (#19)


def _finished_with(answer):
    """A ``FakeWorker`` answer: each job finished at once with the picture and metadata ``answer(job)`` gives."""
    from engine.fleet.wire import FinishedMsg

    return lambda job: [FinishedMsg(worker="hand", job_id=job.job_id, lease=job.lease, seconds=1.0, **answer(job))]


def _png_saying(text: str | None, size: tuple[int, int] = (64, 64)) -> bytes:
    """A PNG (of the tests' request size) whose ``vqgan-clip`` metadata is ``text`` as it is (None: the engine's own, valid)."""
    buf = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text(META_KEY, text)
    Image.new("RGB", size, (10, 120, 200)).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


@pytest.fixture
def redis_url(tmp_path):
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server.url
    finally:
        server.kill()


def _status(fake, bot, job):
    """The job's status message now (the queue's record says which one it is)."""
    return fake.message(bot.queue.get(job.id).origin["status_message_id"])


@needs_redis
async def test_a_workers_malformed_result_fails_its_job_with_a_line_and_the_bot_starts_again(fake, tmp_path,
                                                                                             redis_url):
    cfg = make_config(tmp_path, fake, queue={"backend": "redis", "redis_url": redis_url})
    broken = {"png": _png_saying("{this is not json"), "metadata": {"request": 5}}
    with FakeWorker(redis_url, "hand", answer=_finished_with(lambda job: broken)) as worker:
        async with run_bot(fake, cfg) as bot:
            inter, job = await _start(fake, bot)
            status = await fake.wait_for(lambda: "⚠️ failed" in _status(fake, bot, job).content and
                                         _status(fake, bot, job), timeout=10)
            assert ("⚠️ failed: the worker's result was malformed: metadata.request is not a JSON object"
                    in status.content)
            assert status.components == [], "the Cancel button went with the job"
            assert bot.queue.get(job.id).state == "failed" and [j.job_id for _, j in worker.jobs] == [job.id]
            assert results(fake) == []
        async with run_bot(fake, cfg) as bot:  # every later start used to stop at this job's picture
            assert bot.queue.get(job.id).state == "failed"


async def test_a_stored_result_that_cannot_be_read_again_fails_alone_and_the_bot_starts(fake, tmp_path):
    """A result finished but not shown by an older version, its PNG's metadata not JSON: the next start
    fails that job with a line on its status message, and the others are painted as usual."""
    cfg, runner, hold = await _held_job(fake, tmp_path)
    async with run_bot(fake, cfg, runner) as bot:
        inter, job = await _start(fake, bot, "an old result")
    picture = tmp_path / "results" / f"{job.id}.png"
    picture.write_bytes(_png_saying("{this is not json"))
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:
        db.execute("UPDATE jobs SET state='finished', delivered=0, result_path=?, seconds=2.0, finished_at=? "
                   "WHERE id=?", (str(picture), time.time(), job.id))
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        status = await fake.wait_for(lambda: "⚠️ failed" in fake.message(inter.original.id).content
                                     and fake.message(inter.original.id))
        assert ("⚠️ failed: the worker's result was malformed: the picture: its vqgan-clip metadata is not "
                "valid JSON") in status.content
        assert bot.queue.get(job.id).state == "failed"
        bob = fake.add_user("bob")
        await fake.slash(bob, fake.channel, "imagine", {"prompt": "a new one", "steps": 2})
        [result] = await wait_results(fake)
        assert f"<@{bob.id}>" in result.content


@needs_redis
async def test_a_long_note_from_the_worker_is_cut_and_the_result_posted(fake, tmp_path, redis_url):
    cfg = make_config(tmp_path, fake, queue={"backend": "redis", "redis_url": redis_url})

    def answer(job):
        meta = {"request": job.request.to_metadata(), "note": "made smaller " + "and smaller " * 210}
        return {"png": _png_saying(json.dumps(meta)), "metadata": meta}

    with FakeWorker(redis_url, "hand", answer=_finished_with(answer)):
        async with run_bot(fake, cfg) as bot:
            inter, job = await _start(fake, bot)
            [result] = await wait_results(fake, timeout=10)
            assert len(result.content) <= 2000 and "⚠️ made smaller and smaller" in result.content
            assert "…" in result.content and "react 🔁" in result.content  # the note's tail goes, the rest stays
            await fake.wait_for(lambda: "✅ done" in fake.message(inter.original.id).content)
            assert bot.queue.get(job.id).delivered
            assert not [r for r in fake.requests if r.status == 400]


async def test_a_result_discord_refuses_everywhere_is_posted_at_the_next_start(fake, tmp_path):
    """Nothing was posted, so the job is not marked delivered: the person is told, and it comes later."""
    cfg, runner, hold = await _held_job(fake, tmp_path)
    async with run_bot(fake, cfg, runner) as bot:
        inter, job = await _start(fake, bot)
        fake.fail_next("POST", r"/channels/\d+/messages$|/webhooks/\d+/[^/]+$", status=400, code=50035, count=1000)
        hold.set()
        await fake.wait_for(lambda: "posting the image failed" in fake.message(inter.original.id).content, 10)
        assert bot.queue.get(job.id).state == "finished" and not bot.queue.get(job.id).delivered
    fake.clear_faults()
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        [result] = await wait_results(fake)
        assert result.channel_id == fake.thread_for(inter.original).id
        await fake.wait_for(lambda: "✅ done" in _status(fake, bot, job).content)
        await fake.wait_for(lambda: bot.queue.get(job.id).delivered)


# ------------------------------------------------------------------ a status message Discord will not edit (#19)


async def test_a_status_message_past_its_edit_limit_is_posted_anew(fake, tmp_path):
    """30046: too many edits of a message older than an hour. The status goes on in a new message."""
    cfg, runner, hold = await _held_job(fake, tmp_path)
    async with run_bot(fake, cfg, runner) as bot:
        inter, job = await _start(fake, bot)
        old = inter.original
        fake.fail_next("PATCH", rf"/messages/{old.id}$", status=429, code=30046, retry_after=0.05, count=1000)
        hold.set()
        [result] = await wait_results(fake)
        status = await fake.wait_for(lambda: "✅ done" in _status(fake, bot, job).content and _status(fake, bot, job))
        assert status.id != old.id and status.channel_id == fake.channel.id
        assert result.id in {int(u.rsplit("/", 1)[1]) for u in status.content.split() if "/channels/" in u}
        assert status.components == [], "no Cancel button once the job is done"
        await fake.wait_for(lambda: fake.bot_user.id not in old.reactions.get("❌", []))  # the old message's ❌ goes
        await fake.wait_for(lambda: fake.bot_user.id not in status.reactions.get("❌", []))  # and the new one's


async def test_a_long_rate_limit_on_the_status_message_does_not_hold_the_result(fake, tmp_path):
    cfg, runner, hold = await _held_job(fake, tmp_path, edit_wait_s=1.0)
    async with run_bot(fake, cfg, runner) as bot:
        inter, job = await _start(fake, bot)
        fake.fail_next("PATCH", rf"/messages/{inter.original.id}$", status=429, retry_after=15, count=1000)
        started = time.monotonic()
        hold.set()
        [result] = await wait_results(fake, timeout=6)
        assert time.monotonic() - started < 6
        status = await fake.wait_for(lambda: "✅ done" in _status(fake, bot, job).content and _status(fake, bot, job))
        assert status.components == []


async def test_a_result_posted_just_before_the_bot_stops_is_not_posted_again_at_the_next_start(fake, tmp_path):
    """The bot stops while a result's delivery is still being recorded: it finishes recording before the queue
    closes, so the next start does not post the same picture twice."""
    cfg = make_config(tmp_path, fake)
    alice = fake.add_user("alice")
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        record = bot.delivery._annotate

        async def slowly(job, **keys):
            if "result_message_id" in keys:
                await asyncio.sleep(0.5)  # the result is on Discord; the bot is told to stop meanwhile
            await record(job, **keys)

        bot.delivery._annotate = slowly
        await fake.slash(alice, fake.channel, "imagine", {"prompt": "a lighthouse", "steps": 2})
        [result] = await wait_results(fake)
    async with run_bot(fake, cfg, FakeRunner()) as bot2:
        await asyncio.sleep(1.0)  # a start re-posts undelivered results at once
        assert len(results(fake)) == 1, "the picture was posted again after the restart"
        job = bot2.queue.find(result_message_id=result.id)
        assert job is not None and job.delivered


async def test_a_job_that_ends_while_the_bot_stops_is_posted_once_and_not_again_at_the_next_start(fake, tmp_path):
    """The bot is told to stop while a job paints its last step, and the job finishes instead of stopping: its
    result is posted and recorded as delivered before the job store closes, so the next start does not post it
    a second time."""
    cfg = make_config(tmp_path, fake)
    alice = fake.add_user("alice")
    painting = asyncio.Event()
    loop = asyncio.get_running_loop()

    class FinishesWhenStopped(FakeRunner):
        def __call__(self, req, on_progress, should_stop):
            loop.call_soon_threadsafe(painting.set)
            while not should_stop():
                time.sleep(0.01)
            return super().__call__(req, on_progress, lambda: False)  # the last step ends the job after all

    async with run_bot(fake, cfg, FinishesWhenStopped(delay=0)):
        await fake.slash(alice, fake.channel, "imagine", {"prompt": "a lighthouse", "steps": 2})
        await asyncio.wait_for(painting.wait(), 10)
    [result] = results(fake)  # posted while the bot stopped
    async with run_bot(fake, cfg, FakeRunner()) as bot2:
        await asyncio.sleep(1.0)  # a start re-posts undelivered results at once
        assert len(results(fake)) == 1, "the picture was posted again after the restart"
        job = bot2.queue.find(result_message_id=result.id)
        assert job is not None and job.delivered


async def test_a_job_the_queue_holds_is_no_longer_counted_as_being_prepared(fake, tmp_path):
    """While /imagine's job is being stored, the person's pending count must not see it twice (once as being
    prepared, once as queued): a sweep asked right then was refused as one over the limit."""
    cfg = make_config(tmp_path, fake)
    alice = fake.add_user("alice")
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        store = bot.queue.submit
        preparing_while_stored: list[int] = []

        async def submit(req, **kw):
            job = await store(req, **kw)
            preparing_while_stored.append(bot.preparing.count(kw["owner"]))  # the queue holds the job now
            return job

        bot.queue.submit = submit
        await submitted(fake, bot, await fake.slash(alice, fake.channel, "imagine", {"prompt": "a mill", "steps": 2}))
        assert preparing_while_stored == [0]
