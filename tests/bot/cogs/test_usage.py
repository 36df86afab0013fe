"""Quotas on Discord (bot/cogs/usage.py, the status lines): the relax lane's reply, the refusal with
``relax = false``, moderators exempt, and ``/usage``. The quota is a microsecond: one job puts its owner over."""

from __future__ import annotations

import asyncio
import re

from tests.bot.conftest import FakeRunner, make_config, run_bot, submitted, wait_ephemeral, wait_results

TINY = 1e-6


def status_of(fake, inter) -> str:
    return fake.message(inter.original.id).content or ""


async def test_over_the_quota_a_job_waits_in_the_relax_lane_says_so_and_runs_after_a_fast_job_asked_later(
        fake, tmp_path):
    runner = FakeRunner(delay=0)
    hold = asyncio.Event()
    runner.gate = lambda req: req.prompt != "blocker" or hold.is_set()
    cfg = make_config(tmp_path, fake, limits={"daily_gpu_seconds": TINY})
    async with run_bot(fake, cfg, runner) as bot:
        alice, bob, carol = fake.add_user("alice"), fake.add_user("bob"), fake.add_user("carol")
        await fake.slash(alice, fake.channel, "imagine", {"prompt": "first", "steps": 2})
        await wait_results(fake, 1)
        await fake.wait_for(lambda: bot.queue.quota.usage(str(alice.id)).over)
        blocker = await submitted(fake, bot, await fake.slash(carol, fake.channel, "imagine",
                                                             {"prompt": "blocker", "steps": 2}))
        await fake.wait_for(lambda: bot.queue.get(blocker.id).state == "running")
        late = await fake.slash(alice, fake.channel, "imagine", {"prompt": "second", "steps": 2})
        relaxed = await submitted(fake, bot, late)
        assert relaxed.lane == "relax"
        await fake.wait_for(lambda: "this job waits in the relax lane" in status_of(fake, late))
        assert "you are over today's GPU time" in status_of(fake, late)
        # carol was served last (her blocker runs, not counted yet): fair turns alone would put alice's first
        fast = await fake.slash(carol, fake.channel, "imagine", {"prompt": "third", "steps": 2})
        assert (await submitted(fake, bot, fast)).lane == "fast"
        await fake.wait_for(lambda: "next in line" in status_of(fake, fast))
        assert "relax lane" not in status_of(fake, fast)
        assert [j.request.prompt for j in bot.queue.pending()] == ["blocker", "third", "second"]

        usage = await wait_ephemeral(fake, await fake.slash(alice, fake.channel, "usage"))
        assert "**Your GPU time today**" in usage and "of 0.0 s · left: 0.0 s" in usage
        [reset] = re.findall(r"resets <t:(\d+):R>", usage)
        assert int(reset) % 86400 == 0, "at midnight UTC"
        assert "relax lane" in usage
        bobs = await wait_ephemeral(fake, await fake.slash(bob, fake.channel, "usage"))
        assert "used: 0.0 s of 0.0 s" in bobs and "relax lane" not in bobs

        hold.set()
        await wait_results(fake, 4)
        assert [r.prompt for r in runner.calls] == ["first", "blocker", "third", "second"]


async def test_with_relax_off_over_the_quota_is_refused_in_one_private_line_and_a_moderator_is_exempt(
        fake, tmp_path):
    cfg = make_config(tmp_path, fake, limits={"daily_gpu_seconds": TINY, "relax": False, "moderators_exempt": True},
                      moderator_roles=["mods"], allowed_guilds=[fake.guild_id])
    async with run_bot(fake, cfg, FakeRunner(delay=0)) as bot:
        alice, mod = fake.add_user("alice"), fake.add_user("mod", roles=["mods"])
        for who in (alice, mod):
            await submitted(fake, bot, await fake.slash(who, fake.channel, "imagine", {"prompt": "first", "steps": 2}))
        await wait_results(fake, 2)
        await fake.wait_for(lambda: all(bot.queue.quota.usage(str(u.id)).over for u in (alice, mod)))

        refused = await wait_ephemeral(fake, await fake.slash(alice, fake.channel, "imagine", {"prompt": "more"}))
        assert refused.startswith("⚠️ You have used today's GPU time") and "\n" not in refused
        assert len(bot.queue.jobs_of(str(alice.id))) == 1, "nothing queued"
        assert "new jobs are refused until then" in await wait_ephemeral(
            fake, await fake.slash(alice, fake.channel, "usage"))

        job = await submitted(fake, bot, await fake.slash(mod, fake.channel, "imagine", {"prompt": "mine"}))
        assert job.lane == "fast"
        await wait_results(fake, 3)
        assert "as a moderator you are not held to it" in await wait_ephemeral(
            fake, await fake.slash(mod, fake.channel, "usage"))
