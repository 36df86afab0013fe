"""/queue, /cancel and /help (bot/cogs/queue.py): what people and moderators see of the queue."""

from __future__ import annotations

import asyncio

from tests.bot.conftest import FakeRunner, make_config, run_bot, submitted, wait_ephemeral


async def test_queue_cancel_and_help(fake, tmp_path):
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        i1 = await fake.slash(alice, fake.channel, "imagine", {"prompt": "first one", "steps": 2})
        await submitted(fake, bot, i1)
        i2 = await fake.slash(bob, fake.channel, "imagine", {"prompt": "second one", "steps": 2})
        await submitted(fake, bot, i2)
        q = await fake.slash(bob, fake.channel, "queue")
        text = (await q.wait_response()).data["content"]
        assert "first one" in text and "second one" in text and "**Your jobs**" in text
        assert text.index("first one") < text.index("second one")
        job2 = bot.queue.find(status_message_id=i2.original.id)
        denied = await fake.slash(alice, fake.channel, "cancel", {"job": job2.id})
        assert "Only the person" in await wait_ephemeral(fake, denied)
        c = await fake.slash(bob, fake.channel, "cancel")
        assert "cancelled" in (await c.wait_response()).data["content"]
        assert bot.queue.get(job2.id).state == "cancelled"
        nothing = await fake.slash(bob, fake.channel, "cancel")
        assert "no job" in await wait_ephemeral(fake, nothing)
        h = await fake.slash(bob, fake.channel, "help")
        pieces = [(await h.wait_response()).data["content"], *(m.content for m in await h.wait_followups(1))]
        help_text = "\n".join(pieces)
        for words in ("a:1|b:-0.5", "seed", "mask", "Reply", "🔁", "❌", "🎲", "->", "region:", "ollage",
                      "--ar 16:9", "{red, blue}", "/blend"):
            assert words in help_text
        assert all(len(p) <= 2000 for p in pieces)
        hold.set()


async def test_moderators_see_the_whole_queue_with_queue_all(fake, tmp_path):
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    async with run_bot(fake, make_config(tmp_path, fake, moderator_roles=["mods"], allowed_guilds=[fake.guild_id]), runner) as bot:
        alice, bob, mod = fake.add_user("alice"), fake.add_user("bob"), fake.add_user("mod", roles=["mods"])
        for who in (alice, bob, bob):
            i = await fake.slash(who, fake.channel, "imagine", {"prompt": "a fleet of ships", "steps": 2})
            await submitted(fake, bot, i)
        denied = await fake.slash(alice, fake.channel, "queue", {"show": "all"})
        assert "only moderators" in await wait_ephemeral(fake, denied)
        q = await fake.slash(mod, fake.channel, "queue", {"show": "all"})
        text = (await q.wait_response()).data["content"]
        assert "workers: 1, in this process" in text and "queue: 2 waiting, 1 running" in text
        assert f"{bob.id}: 2 waiting, 0 running" in text
        hold.set()


async def test_with_no_worker_reachable_imagine_still_queues_and_says_painting_is_paused(fake, tmp_path):
    from tests.fleet import free_port

    cfg = make_config(tmp_path, fake, queue={"backend": "redis", "redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    async with run_bot(fake, cfg) as bot:
        alice = fake.add_user("alice")
        i = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a lighthouse", "steps": 2})
        job = await submitted(fake, bot, i)
        assert job.state == "queued"
        await fake.wait_for(lambda: "painting is paused: no worker reachable" in (i.original.content or ""))


async def test_help_fits_with_the_longest_custom_server_emoji(fake, tmp_path):
    """A server's own emoji for rerun, vary and cancel (``<a:32 characters:19 digits>``, 56 characters
    each) must not push /help over Discord's 2,000 characters: the person still gets all of it."""
    emoji = {key: str(fake.add_emoji(f"{key}_{'x' * 32}"[:32], animated=True))
             for key in ("rerun", "vary", "cancel")}
    assert all(len(e) == 56 for e in emoji.values())
    cfg = make_config(tmp_path, fake, **{f"{key}_emoji": e for key, e in emoji.items()})
    async with run_bot(fake, cfg, FakeRunner()):
        h = await fake.slash(fake.add_user("bob"), fake.channel, "help")
        first = (await h.wait_response()).data["content"]
        pieces = [first, *(m.content for m in await h.wait_followups(1))]
        assert all(m.ephemeral for m in h.followups)
        text = "\n".join(pieces)
        assert all(len(p) <= 2000 for p in pieces) and len(text) > 2000
        for words in ("**Painting with words**", "a:1|b:-0.5", "**Editing**", "**Buttons and reactions**",
                      *emoji.values(), "/queue", "jobs waiting at a time"):
            assert words in text
