"""/gallery (bot/cogs/gallery.py): a private, signed, expiring link; moderators get their server's pages."""

from __future__ import annotations

import time

from bot.web.links import Links
from tests.bot.conftest import (
    GALLERY_SECRET,
    FakeRunner,
    make_config,
    run_bot,
    wait_ephemeral,
    web_config,
    web_url,
)
from tests.bot.web.conftest import LINK


async def test_gallery_answers_privately_with_a_signed_link_and_more_for_moderators(fake, tmp_path):
    cfg = web_config(tmp_path, fake, moderator_roles=["mods"], allowed_guilds=[fake.guild_id],
                     gallery={"public_url": "https://art.example.org/"})
    async with run_bot(fake, cfg, FakeRunner()):
        alice, mod = fake.add_user("alice"), fake.add_user("mod", roles=["mods"])
        inter = await fake.slash(alice, fake.channel, "gallery")
        text = await wait_ephemeral(fake, inter)
        assert inter.responses[0].data["flags"] & 64  # only alice sees it
        [link] = LINK.findall(text.replace("https://", "http://"))
        assert link.startswith(f"http://art.example.org/gallery/u.{alice.id}.")  # gallery.public_url
        scope = Links(GALLERY_SECRET, 1).verify(link.rsplit("/", 1)[1])
        assert scope is not None and (scope.kind, scope.subject) == ("u", alice.id)
        assert abs(scope.expires - (time.time() + cfg.gallery.link_ttl_s)) < 60
        assert f"<t:{scope.expires}:R>" in text and "only for you" in text
        assert "server" not in text

        text = await wait_ephemeral(fake, await fake.slash(mod, fake.channel, "gallery"))
        links = LINK.findall(text.replace("https://", "http://"))
        assert [link.rsplit("/", 1)[1].split(".")[:2] for link in links] == [
            ["u", str(mod.id)], ["g", str(fake.guild_id)], ["s", str(fake.guild_id)]]
        assert "this server's pictures" in text and "this server's status" in text
        h = await fake.slash(alice, fake.channel, "help")  # in two messages: a server's emoji may make it long
        first = (await h.wait_response()).data["content"]
        assert "`/gallery`" in first + "".join(m.content for m in await h.wait_followups(1))


async def test_gallery_when_it_is_off_says_so_in_one_line(fake, tmp_path):
    async with run_bot(fake, make_config(tmp_path, fake), FakeRunner()):
        text = await wait_ephemeral(fake, await fake.slash(fake.add_user("alice"), fake.channel, "gallery"))
        assert text == "ℹ️ the gallery is not enabled on this bot"


def test_web_url_is_the_servers_own_address_without_a_public_url(fake, tmp_path):
    cfg = web_config(tmp_path, fake)
    assert cfg.gallery_url() == web_url(cfg)
