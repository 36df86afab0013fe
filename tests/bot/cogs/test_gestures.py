"""Reactions, replies and the queue across users and restarts, end to end against the fake Discord."""

from __future__ import annotations

import asyncio

import pytest

from tests.bot.conftest import (
    FakeRunner,
    job_of,
    make_config,
    png,
    results,
    run_bot,
    submitted,
    wait_results,
)


async def test_rerun_reaction_gives_a_new_seed(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    runner = FakeRunner()
    async with run_bot(fake, cfg, runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        await fake.slash(alice, fake.channel, "imagine", {"prompt": "a red barn", "seed": 7, "steps": 2})
        [first] = await wait_results(fake)
        await fake.react(bob, first, "🔁")
        second = (await wait_results(fake, 2))[1]
        assert "a red barn" in second.content and "seed `7`" not in second.content
        assert runner.calls[1].seed != 7 and runner.calls[1].prompt == "a red barn"
        job = (await job_of(fake, bot, second))
        assert job.owner == str(bob.id) and job.request.parent == (await job_of(fake, bot, first)).id
        assert second.channel_id == first.channel_id  # same thread


async def test_reply_with_text_to_an_upload_edits_it(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    runner = FakeRunner()
    async with run_bot(fake, cfg, runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        upload = await fake.user_message(alice, fake.channel, "look at this",
                                         attachments=[("photo.png", png((64, 32)), "image/png")])
        reply = await fake.user_message(bob, fake.channel, "a snowy mountain", reply_to=upload)
        [result] = await wait_results(fake)
        req = runner.calls[0]
        assert req.kind == "edit" and req.prompt == "a snowy mountain" and req.init_image
        assert req.width / req.height == 2  # the upload's shape
        job = (await job_of(fake, bot, result))
        status = fake.message(job.origin["status_message_id"])
        assert status.reply_to == reply.id
        assert fake.thread_for(status) is not None and result.channel_id == fake.thread_for(status).id


async def test_reply_to_a_result_edits_the_result(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    runner = FakeRunner()
    async with run_bot(fake, cfg, runner) as bot:
        alice = fake.add_user("alice")
        await fake.slash(alice, fake.channel, "imagine", {"prompt": "a lake", "steps": 2})
        [first] = await wait_results(fake)
        await fake.user_message(alice, first.channel_id, "the same lake at night", reply_to=first)
        second = (await wait_results(fake, 2))[1]
        assert runner.calls[1].kind == "edit"
        assert (await job_of(fake, bot, second)).request.parent == \
            (await job_of(fake, bot, first)).id


async def test_cancel_reaction_by_owner_and_not_by_a_stranger(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    async with run_bot(fake, cfg, runner) as bot:
        alice, mallory = fake.add_user("alice"), fake.add_user("mallory")
        inter = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a slow painting", "steps": 2})
        await fake.wait_for(lambda: inter.original and not inter.original.loading and "❌" in inter.original.reactions)
        job = bot.queue.find(status_message_id=inter.original.id)
        await fake.wait_for(lambda: bot.queue.get(job.id).state == "running")
        await fake.react(mallory, inter.original, "❌")
        await asyncio.sleep(0.3)
        assert bot.queue.get(job.id).state == "running"
        await fake.react(alice, inter.original, "❌")
        await fake.wait_for(lambda: bot.queue.get(job.id).state == "cancelled")
        await fake.wait_for(lambda: "cancelled" in fake.message(inter.original.id).content)
        hold.set()
        await asyncio.sleep(0.2)
        assert results(fake) == []


async def test_moderator_cancels_a_queued_job(fake, tmp_path):
    cfg = make_config(tmp_path, fake, moderator_roles=[f"{fake.guild_id}/mods"])  # a role of this server
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    async with run_bot(fake, cfg, runner) as bot:
        alice, bob, mod = fake.add_user("alice"), fake.add_user("bob"), fake.add_user("mod", roles=["mods"])
        await fake.slash(alice, fake.channel, "imagine", {"prompt": "first", "steps": 2})
        i2 = await fake.slash(bob, fake.channel, "imagine", {"prompt": "second", "steps": 2})
        await fake.wait_for(lambda: i2.original and bot.queue.find(status_message_id=i2.original.id))
        job2 = bot.queue.find(status_message_id=i2.original.id)
        assert job2.state == "queued"
        await fake.react(mod, i2.original, "❌")
        await fake.wait_for(lambda: bot.queue.get(job2.id).state == "cancelled")
        hold.set()
        [only] = await wait_results(fake)
        assert "first" in only.content


async def test_two_users_are_served_one_at_a_time_and_fairly(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    runner = FakeRunner(delay=0.01)
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    async with run_bot(fake, cfg, runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        for p in ("a1", "a2", "a3"):
            i = await fake.slash(alice, fake.channel, "imagine", {"prompt": p, "steps": 2})
            await submitted(fake, bot, i)
        for p in ("b1", "b2"):
            i = await fake.slash(bob, fake.channel, "imagine", {"prompt": p, "steps": 2})
            await submitted(fake, bot, i)
        hold.set()
        await wait_results(fake, 5, timeout=30)
        order = [r.prompt for r in runner.calls]
        assert order == ["a1", "b1", "a2", "b2", "a3"]
        # one at a time: each result was posted before the next job started
        starts = sorted(results(fake), key=lambda m: m.id)
        assert [s.content.split("**")[1] for s in starts] == order


async def test_restart_mid_job_delivers_after_restart(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    alice = fake.add_user("alice")
    async with run_bot(fake, cfg, runner) as bot:
        inter = await fake.slash(alice, fake.channel, "imagine", {"prompt": "survives restarts", "steps": 2})
        await fake.wait_for(lambda: inter.original and bot.queue.find(status_message_id=inter.original.id))
        job = bot.queue.find(status_message_id=inter.original.id)
        await fake.wait_for(lambda: bot.queue.get(job.id).state == "running")
    assert results(fake) == []
    hold.set()
    async with run_bot(fake, cfg, FakeRunner()) as bot2:
        [result] = await wait_results(fake)
        thread = fake.thread_for(inter.original)
        assert result.channel_id == thread.id
        assert (await job_of(fake, bot2, result)).id == job.id
        # gestures find the job in the store after the restart
    async with run_bot(fake, cfg, FakeRunner()) as bot3:
        await fake.react(alice, result, "🔁")
        second = (await wait_results(fake, 2))[1]
        assert (await job_of(fake, bot3, second)).request.parent == job.id


async def test_a_reaction_on_a_result_that_is_not_recorded_yet_still_reruns_it(fake, tmp_path):
    """The gateway can show a result before the bot has noted which job it is; a quick 🔁 still counts."""
    cfg = make_config(tmp_path, fake)
    runner = FakeRunner()
    async with run_bot(fake, cfg, runner) as bot:
        record = bot.delivery._annotate

        async def slowly(job, **keys):
            if "result_message_id" in keys:
                await asyncio.sleep(0.5)
            await record(job, **keys)

        bot.delivery._annotate = slowly
        alice = fake.add_user("alice")
        await fake.slash(alice, fake.channel, "imagine", {"prompt": "a red barn", "seed": 7, "steps": 2})
        [first] = await wait_results(fake)
        assert bot.queue.find(result_message_id=first.id) is None  # not recorded yet
        await fake.react(alice, first, "🔁")
        second = (await wait_results(fake, 2))[1]
        assert "a red barn" in second.content and runner.calls[1].seed != 7


@pytest.mark.parametrize("named", ["listed server", "server/name"])
async def test_role_priority_goes_first(fake, tmp_path, named):
    if named == "listed server":  # a bare name counts on the servers the config lists
        cfg = make_config(tmp_path, fake, queue={"role_priority": {"Patron": 10}}, guilds=[fake.guild_id])
    else:
        cfg = make_config(tmp_path, fake, queue={"role_priority": {f"{fake.guild_id}/Patron": 10}})
    runner = FakeRunner(delay=0.01)
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    async with run_bot(fake, cfg, runner) as bot:
        alice, bob, pat = fake.add_user("alice"), fake.add_user("bob"), fake.add_user("pat", roles=["Patron"])
        for user, prompt in ((alice, "running"), (bob, "normal"), (pat, "patron")):
            i = await fake.slash(user, fake.channel, "imagine", {"prompt": prompt, "steps": 2})
            await submitted(fake, bot, i)
        hold.set()
        await wait_results(fake, 3)
        assert [r.prompt for r in runner.calls] == ["running", "patron", "normal"]


async def test_waiting_jobs_see_their_place_move_up(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    runner = FakeRunner()
    go = {p: asyncio.Event() for p in ("p1", "p2", "p3")}
    runner.gate = lambda req: go[req.prompt].is_set()
    async with run_bot(fake, cfg, runner) as bot:
        alice, bob, carol = fake.add_user("alice"), fake.add_user("bob"), fake.add_user("carol")
        inters = []
        for user, prompt in ((alice, "p1"), (bob, "p2"), (carol, "p3")):
            i = await fake.slash(user, fake.channel, "imagine", {"prompt": prompt, "steps": 2})
            await submitted(fake, bot, i)
            inters.append(i)
        third = inters[2].original
        await fake.wait_for(lambda: "#2 in line" in fake.message(third.id).content)
        go["p1"].set()
        await fake.wait_for(lambda: "next in line" in fake.message(third.id).content)
        go["p2"].set()
        go["p3"].set()
        await wait_results(fake, 3)


async def test_cancel_reaction_after_a_restart(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    async with run_bot(fake, cfg, runner) as bot:
        i1 = await fake.slash(alice, fake.channel, "imagine", {"prompt": "keeps going", "steps": 2})
        await submitted(fake, bot, i1)
        i2 = await fake.slash(bob, fake.channel, "imagine", {"prompt": "will be cancelled", "steps": 2})
        job2 = await submitted(fake, bot, i2)
    runner2 = FakeRunner()
    runner2.gate = lambda req: hold.is_set()
    async with run_bot(fake, cfg, runner2) as bot2:
        await fake.react(bob, i2.original, "❌")
        await fake.wait_for(lambda: bot2.queue.get(job2.id).state == "cancelled")
        hold.set()
        [only] = await wait_results(fake)
        assert "keeps going" in only.content
