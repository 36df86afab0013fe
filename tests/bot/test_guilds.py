"""The bot in two servers: one server's owner, moderators and roles have no say over the other's jobs.

Server A is the fake's first guild; server B is Mallory's, who owns it (so she is its Administrator)
and made roles there named like the ones the config names.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from tests.bot.conftest import FakeRunner, make_config, run_bot, submitted, wait_ephemeral, wait_results


def _server_b(fake):
    b = fake.add_guild("Mallory's server")
    return b, fake.users[b.owner_id], fake.channels_of(b)[0]


async def _text(fake, inter) -> str:
    return (await inter.wait_response()).data.get("content", "")


async def test_another_servers_owner_neither_sees_nor_cancels_our_jobs(fake, tmp_path):
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    b, mallory, b_general = _server_b(fake)
    eve = fake.add_user("eve", roles=["mods"], guild=b)  # a "mods" role, but of server B
    cfg = make_config(tmp_path, fake, moderator_roles=["mods"])
    async with run_bot(fake, cfg, runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        i1 = await fake.slash(alice, fake.channel, "imagine", {"prompt": "alice's secret garden", "steps": 2})
        running = await submitted(fake, bot, i1)
        i2 = await fake.slash(bob, fake.channel, "imagine", {"prompt": "bob's quiet lake", "steps": 2})
        waiting = await submitted(fake, bot, i2)
        i3 = await fake.slash(mallory, b_general, "imagine", {"prompt": "mallory's own tower", "steps": 2})
        hers = await submitted(fake, bot, i3)

        # /queue in B lists B's jobs only
        seen = await _text(fake, await fake.slash(mallory, b_general, "queue"))
        assert "mallory's own tower" in seen and hers.id in seen
        for job, words in ((running, "secret garden"), (waiting, "quiet lake")):
            assert job.id not in seen and words not in seen
        assert f"<@{alice.id}>" not in seen and f"<@{bob.id}>" not in seen
        # ... and so does the fleet view, which she may see as B's Administrator
        fleet = await _text(fake, await fake.slash(mallory, b_general, "queue", {"show": "all"}))
        assert "queue: 1 waiting, 0 running" in fleet and str(alice.id) not in fleet and str(bob.id) not in fleet
        # while A's own /queue does not show hers
        ours = await _text(fake, await fake.slash(alice, fake.channel, "queue"))
        assert "secret garden" in ours and "quiet lake" in ours and "tower" not in ours and hers.id not in ours

        # neither B's Administrator nor B's "mods" can cancel A's jobs from B
        for who in (mallory, eve):
            for job in (running, waiting):
                refused = await fake.slash(who, b_general, "cancel", {"job": job.id})
                assert "there is no job" in await wait_ephemeral(fake, refused)
        await asyncio.sleep(0.2)
        assert bot.queue.get(running.id).state == "running" and bot.queue.get(waiting.id).state == "queued"
        assert "cancelled" not in fake.message(i1.original.id).content
        assert "cancelled" not in fake.message(i2.original.id).content

        # A's own Administrator still may; and anybody may cancel their own job
        done = await fake.slash(fake.owner, fake.channel, "cancel", {"job": waiting.id})
        assert "cancelled" in await _text(fake, done)
        assert bot.queue.get(waiting.id).state == "cancelled"
        own = await fake.slash(mallory, b_general, "cancel", {"job": hers.id})
        assert "cancelled" in await _text(fake, own)
        hold.set()
        [result] = await wait_results(fake)
        assert "secret garden" in result.content


async def test_a_role_named_like_ours_on_another_server_gives_no_priority(fake, tmp_path, caplog):
    """The default config names the role "Patron": Mallory makes a "Patron" on her server, and her
    member's job must not jump ahead of server A's waiting job."""
    runner = FakeRunner(delay=0.01)
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    b, _mallory, b_general = _server_b(fake)
    eve = fake.add_user("eve", roles=["Patron"], guild=b)
    cfg = make_config(tmp_path, fake, queue={"role_priority": {"Patron": 10}})
    with caplog.at_level(logging.WARNING, logger="bot.app"):
        async with run_bot(fake, cfg, runner) as bot:
            alice, bob = fake.add_user("alice"), fake.add_user("bob")
            for user, channel, prompt in ((alice, fake.channel, "running"), (bob, fake.channel, "normal"),
                                          (eve, b_general, "sneaky")):
                await submitted(fake, bot, await fake.slash(user, channel, "imagine", {"prompt": prompt, "steps": 2}))
            hold.set()
            await wait_results(fake, 3)
    assert [r.prompt for r in runner.calls] == ["running", "normal", "sneaky"]
    # the operator is told why a bare name counts nowhere here
    assert any("role_priority" in r.message and "'Patron'" in r.message and "guilds" in r.message
               for r in caplog.records)


@pytest.mark.parametrize("roles", [["artists"], ["{a}/artists"]])
async def test_a_role_named_like_ours_on_another_server_does_not_let_its_members_in(fake, tmp_path, roles):
    b, _mallory, b_general = _server_b(fake)
    eve = fake.add_user("eve", roles=["artists"], guild=b)
    cfg = make_config(tmp_path, fake, allowed_roles=[r.format(a=fake.guild_id) for r in roles])
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        inter = await fake.slash(eve, b_general, "imagine", {"prompt": "a house", "steps": 2})
        assert "you need one of the roles" in await wait_ephemeral(fake, inter)
        assert bot.queue.pending() == []
        if roles != ["artists"]:  # the server-qualified name still lets server A's artists in
            dave = fake.add_user("dave", roles=["artists"])
            await fake.slash(dave, fake.channel, "imagine", {"prompt": "a house", "steps": 2})
            await wait_results(fake)
