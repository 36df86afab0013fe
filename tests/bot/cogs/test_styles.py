"""/style save, list, delete (bot/cogs/styles.py) and /imagine style:NAME: named prompt endings."""

from __future__ import annotations

from tests.bot.conftest import FakeRunner, make_config, run_bot, submitted, wait_ephemeral, wait_results


async def answer(fake, user, command: str, **options) -> str:
    """The private line ``command`` answers ``user`` with."""
    inter = await fake.slash(user, fake.channel, command, options)
    return await wait_ephemeral(fake, inter)


async def test_a_saved_style_is_added_to_the_prompt_listed_and_deleted(fake, tmp_path):
    runner = FakeRunner(delay=0)
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice = fake.add_user("alice")
        assert "saved your style `oil`" in await answer(fake, alice, "style save", name="Oil",
                                                        text="oil painting,  dramatic lighting")
        assert "replaced your style `noir`" not in await answer(fake, alice, "style save", name="noir", text="film noir")
        listed = await answer(fake, alice, "style list")
        assert "`noir` · film noir" in listed and "`oil` · oil painting, dramatic lighting" in listed
        offered = await fake.autocomplete(alice, fake.channel, "imagine", "style", "o", {"prompt": "a cat"})
        assert [c["value"] for c in offered] == ["noir", "oil"]

        inter = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a harbour", "style": "OIL"})
        await submitted(fake, bot, inter)
        await wait_results(fake)
        assert runner.calls[0].prompt == "a harbour, oil painting, dramatic lighting"

        unknown = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a harbour", "style": "watercolour"})
        line = await wait_ephemeral(fake, unknown)
        assert line == "⚠️ there is no style 'watercolour'; yours: noir, oil"

        assert "deleted the style `oil`" in await answer(fake, alice, "style delete", name="oil")
        assert "you have no style 'oil'" in await answer(fake, alice, "style delete", name="oil")
        gone = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a harbour", "style": "oil"})
        assert "there is no style 'oil'; yours: noir" in await wait_ephemeral(fake, gone)
        assert len(runner.calls) == 1 and len(bot.queue.jobs_of(str(alice.id))) == 1


async def test_server_styles_are_made_by_moderators_and_seen_by_everyone_there(fake, tmp_path):
    runner = FakeRunner(delay=0)
    cfg = make_config(tmp_path, fake, moderator_roles=["mods"], allowed_guilds=[fake.guild_id],
                      queue={"per_owner_pending": 10})
    async with run_bot(fake, cfg, runner) as bot:
        mod, bob, carol = fake.add_user("mod", roles=["mods"]), fake.add_user("bob"), fake.add_user("carol")
        assert "only this server's moderators" in await answer(fake, bob, "style save", name="house",
                                                               text="bob's idea", server=True)
        assert "saved this server's style `house`" in await answer(fake, mod, "style save", name="house",
                                                                   text="in the house style", server=True)
        assert "`house` · in the house style" in await answer(fake, bob, "style list")
        assert "only this server's moderators" in await answer(fake, bob, "style delete", name="house", server=True)
        await answer(fake, carol, "style save", name="house", text="carol's own way")  # hers wins, for her

        for who in (bob, carol):
            inter = await fake.slash(who, fake.channel, "imagine", {"prompt": "a barn", "style": "house"})
            await submitted(fake, bot, inter)
        await wait_results(fake, 2)
        assert sorted(r.prompt for r in runner.calls) == ["a barn, carol's own way", "a barn, in the house style"]
        assert "*(yours wins)*" in await answer(fake, carol, "style list")

        assert "deleted the style `house`" in await answer(fake, mod, "style delete", name="house", server=True)
        assert "none yet" in await answer(fake, bob, "style list")


async def test_style_limits_are_one_line_each(fake, tmp_path):
    cfg = make_config(tmp_path, fake, max_styles=2, limits={"max_prompt_chars": 40})
    async with run_bot(fake, cfg, FakeRunner(delay=0)):
        alice = fake.add_user("alice")
        for options, expect in (
            ({"name": "n" * 33, "text": "ok"}, "a style name is 1 to 32 letters, digits, '-' or '_'"),
            ({"name": "two words", "text": "ok"}, "a style name is 1 to 32"),
            ({"name": "long", "text": "t" * 41}, "a style's text is at most 40 characters (got 41)"),
            ({"name": "story", "text": "a ^ b"}, "cannot hold a story"),
            ({"name": "heavy", "text": "gold:1e9"}, "must be between -1000 and 1000"),
        ):
            line = await answer(fake, alice, "style save", **options)
            assert expect in line and "\n" not in line, (options, line)
        await answer(fake, alice, "style save", name="one", text="first")
        await answer(fake, alice, "style save", name="two", text="second")
        assert "you have 2 styles, the most allowed; /style delete one first" in await answer(
            fake, alice, "style save", name="three", text="third")
        assert "replaced your style `two`" in await answer(fake, alice, "style save", name="two", text="again")
        text = "x" * 38
        too_long = await fake.slash(alice, fake.channel, "imagine", {"prompt": text, "style": "two"})
        assert "with its style the prompt is 45 characters; the limit is 40" in await wait_ephemeral(fake, too_long)
