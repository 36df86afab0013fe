"""/moderation ban, unban and list: a server's moderators keep its banned words, across restarts."""

from __future__ import annotations

from tests.bot.conftest import FakeRunner, job_of, results, run_bot, wait_ephemeral, wait_results
from tests.bot.test_moderation import REFUSED, moderated


async def _says(fake, user, channel, command, options=None) -> str:
    return await wait_ephemeral(fake, await fake.slash(user, channel, command, options or {}))


async def test_moderators_ban_and_unban_words_which_hold_across_a_restart(fake, tmp_path):
    log_ch = fake.add_channel("mod-log")
    cfg = moderated(tmp_path, fake, discord={"moderator_roles": [f"{fake.guild_id}/mods"]}, banned=["gore"], log_channel=log_ch.id)
    runner = FakeRunner()
    mia, alice = fake.add_user("mia", roles=["mods"]), fake.add_user("alice")
    other = fake.add_guild("another server")
    their_owner, their_channel = fake.users[other.owner_id], fake.channels_of(other)[0]
    async with run_bot(fake, cfg, runner) as bot:
        await fake.slash(alice, fake.channel, "imagine", {"prompt": "a clown party", "steps": 2})
        [first] = await wait_results(fake)

        assert "banned `clown` on this server" in await _says(fake, mia, fake.channel, "moderation ban",
                                                              {"word": "ＣＬＯＷＮ"})
        assert "already banned on this server" in await _says(fake, mia, fake.channel, "moderation ban",
                                                              {"word": "clown"})
        assert "already banned by the bot's config" in await _says(fake, mia, fake.channel, "moderation ban",
                                                                   {"word": "Gore"})
        assert "not a valid regular expression" in await _says(fake, mia, fake.channel, "moderation ban",
                                                               {"word": "re:(clown"})
        assert await _says(fake, alice, fake.channel, "imagine", {"prompt": "two clown shoes"}) == REFUSED
        await fake.react(alice, first, "🔁")  # a rerun of a result banned since: refused too
        [notice] = await fake.wait_for(lambda: [m for m in fake.bot_messages() if m.reply_to == first.id])
        assert notice.content == f"⚠️ <@{alice.id}> this server does not allow that prompt"
        job = await job_of(fake, bot, first)
        press = await fake.button_click(alice, fake.message(first.id), f"vqgan:rerun:{job.id}")  # the Rerun button
        assert await wait_ephemeral(fake, press) == REFUSED and not press.deferred

        # not a moderator: one line, whatever the subcommand; nothing changes
        for sub, options in (("ban", {"word": "kittens"}), ("unban", {"word": "clown"}), ("list", {})):
            said = await _says(fake, alice, fake.channel, f"moderation {sub}", options)
            assert said == "⚠️ only this server's moderators can change or see its banned words"
        listed = await _says(fake, mia, fake.channel, "moderation list")
        assert "moderators** (1" in listed and "`clown`" in listed and "config** (1)" in listed and "`gore`" in listed
        assert "kittens" not in listed

        # another server is not bound by this server's list (and its own owner moderates it)
        await fake.slash(their_owner, their_channel, "imagine", {"prompt": "a clown car", "steps": 2})
        await wait_results(fake, 2)
        assert "nothing is banned" not in await _says(fake, their_owner, their_channel, "moderation list")
        assert "`clown`" not in await _says(fake, their_owner, their_channel, "moderation list")
        assert bot.refusals.counts() == {"moderation": 3}

    async with run_bot(fake, cfg, runner) as bot:  # a restart: the list is read back from the job store
        assert await _says(fake, alice, fake.channel, "imagine", {"prompt": "a sad clown"}) == REFUSED
        assert "banned by the bot's config; only its operator" in await _says(
            fake, mia, fake.channel, "moderation unban", {"word": "gore"})
        assert "unbanned `clown`" in await _says(fake, mia, fake.channel, "moderation unban", {"word": "Clown"})
        assert "is not banned on this server" in await _says(fake, mia, fake.channel, "moderation unban",
                                                             {"word": "clown"})
        await fake.slash(alice, fake.channel, "imagine", {"prompt": "a sad clown", "steps": 2})
        await fake.wait_for(lambda: any("a sad clown" in m.content for m in results(fake)))
        assert "`clown`" not in await _says(fake, mia, fake.channel, "moderation list")

    lines = [m.content for m in fake.messages_in(log_ch)]
    assert sum(line.startswith(f"🛡️ <@{mia.id}> · /moderation ban · ") and "banned `clown`" in line
               for line in lines) == 1
    assert sum(line.startswith(f"🛡️ <@{mia.id}> · /moderation unban · ") and "unbanned `clown`" in line
               for line in lines) == 1
    assert [line.split(" · ")[1] for line in lines if line.startswith("🚫")] == ["/imagine", "🔁 reaction", "rerun button",
                                                                                   "/imagine"]
    assert all("(moderators)" in line for line in lines if line.startswith("🚫"))


async def test_a_list_too_long_for_a_message_comes_as_a_file(fake, tmp_path):
    words = [f"forbidden-word-number-{i:03d}" for i in range(150)]
    other = fake.add_guild("strict server")
    owner, channel = fake.users[other.owner_id], fake.channels_of(other)[0]
    cfg = moderated(tmp_path, fake, banned=["gore"], guilds={other.id: {"banned": words, "replace": True}})
    async with run_bot(fake, cfg, FakeRunner()):
        inter = await fake.slash(owner, channel, "moderation list")
        text = await wait_ephemeral(fake, inter)
        assert "0 by this server's moderators, 150 by the bot's config" in text and len(text) <= 2000
        [file] = inter.responses[0].files
        listed = file.data.decode().splitlines()
        assert file.filename == "banned.txt" and set(words) <= set(listed) and "gore" not in listed
        # the list there replaces the global one; here, the global one holds
        assert await _says(fake, owner, channel, "imagine", {"prompt": "forbidden-word-number-007"}) == REFUSED
        await fake.slash(owner, channel, "imagine", {"prompt": "gore", "steps": 2})
        await wait_results(fake)
        alice = fake.add_user("alice")
        assert await _says(fake, alice, fake.channel, "imagine", {"prompt": "gore"}) == REFUSED
