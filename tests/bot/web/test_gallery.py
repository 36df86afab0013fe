"""The web gallery (bot/web/gallery.py, bot/web/links.py): a signed link shows its holder's pictures and
nothing else; every way of reaching something else is refused."""

from __future__ import annotations

import os
import time
from pathlib import Path

import aiohttp
from yarl import URL

from bot.app import VQGANBot
from bot.web.links import Links
from engine import format_seconds
from engine.queue import JobQueue
from tests.bot.conftest import GALLERY_SECRET, FakeRunner, web_config, web_url
from tests.bot.web.conftest import gallery_links, paint


async def fetch(url: str | URL) -> tuple[int, dict[str, str], bytes]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def token_of(link: str) -> str:
    return link.rsplit("/gallery/", 1)[1]


def forged(token: str, *, kind: str | None = None, subject: int | None = None, expires: int | None = None) -> str:
    """The token with one part changed and its signature kept."""
    k, s, e, sig = token.split(".")
    return ".".join([kind or k, str(subject or s), str(expires or e), sig])


async def test_a_persons_link_shows_their_pictures_newest_first_and_nothing_else(fake, tmp_path):
    cfg = web_config(tmp_path, fake, moderator_roles=["mods"], allowed_guilds=[fake.guild_id])
    bot = VQGANBot(cfg, JobQueue(cfg, runner=FakeRunner()))
    async with fake.running(bot):
        w = await paint(fake, bot)
        fox, jay, garden = (w.jobs[p] for p in ("a red fox in the snow", "a blue jay <b>& friends</b>",
                                                "bob's secret garden"))
        [link] = await gallery_links(fake, w.alice)
        assert link.startswith(web_url(cfg, f"/gallery/u.{w.alice.id}."))
        token = token_of(link)

        status, headers, body = await fetch(link)
        page = body.decode()
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert headers["Content-Security-Policy"].startswith("default-src 'none'; img-src 'self'")
        assert "script-src 'self'" in headers["Content-Security-Policy"] and "unsafe-inline" not in page
        assert headers["X-Content-Type-Options"] == "nosniff" and headers["Referrer-Policy"] == "no-referrer"
        assert "Set-Cookie" not in headers and headers["Cache-Control"] == "no-store"
        assert page.index("a blue jay &lt;b&gt;&amp; friends&lt;/b&gt;") < page.index("a red fox in the snow")
        assert "<b>&" not in page and "secret garden" not in page  # escaped; bob's is not alice's
        for words in (f"{fox.request.seed}", "64x64", "imagenet_f16_16384", "ViT-B-32 (openai)", "Copy prompt",
                      f'href="{token}/{fox.id}.png"', f'href="{token}/{fox.id}.mp4"', "../static/gallery.js"):
            assert words in page
        assert "<script>" not in page  # no inline script: the CSP forbids it

        status, headers, png = await fetch(f"{link}/{fox.id}.png")
        assert status == 200 and headers["Content-Type"] == "image/png"
        assert png == Path(fox.result_path).read_bytes()
        status, headers, mp4 = await fetch(f"{link}/{fox.id}.mp4")
        assert status == 200 and headers["Content-Type"] == "video/mp4" and mp4[4:8] == b"ftyp"
        status, headers, js = await fetch(web_url(cfg, "/static/gallery.js"))
        assert status == 200 and headers["Content-Type"].startswith("text/javascript") and b"clipboard" in js

        # someone else's picture under alice's link: not there
        assert (await fetch(f"{link}/{garden.id}.png"))[0] == 404
        assert (await fetch(f"{link}/{garden.id}.mp4"))[0] == 404
        # a link changed to another person, a later expiry or a server's page; an expired or foreign one
        links = Links(GALLERY_SECRET, cfg.gallery.link_ttl_s)
        expired, _ = links.token("u", w.alice.id, now=time.time() - 2 * cfg.gallery.link_ttl_s)
        other_key, _ = Links("another secret, 32 characters...", 3600).token("u", w.alice.id)
        for bad in (forged(token, subject=w.bob.id), forged(token, expires=int(time.time()) + 10**6),
                    forged(token, kind="g", subject=fake.guild_id), forged(token, kind="s", subject=fake.guild_id),
                    expired, other_key, token[:-1] + ("A" if token[-1] != "A" else "B"), "u.1.2.3", "x" * 300):
            status, headers, body = await fetch(web_url(cfg, f"/gallery/{bad}"))
            assert status == 403 and b"Type /gallery in" in body and "Set-Cookie" not in headers, bad
            assert (await fetch(web_url(cfg, f"/gallery/{bad}/{fox.id}.png")))[0] == 403
        assert (await fetch(web_url(cfg, f"/gallery/{forged(token, subject=w.bob.id)}/{garden.id}.png")))[0] == 403

        # no path leads out of the results folder: only "<12 hex>.png|mp4" of a job in scope is a file
        results = Path(cfg.queue.results_dir)
        for raw in (f"/gallery/{token}/..%2F..%2Fjobs.sqlite3", f"/gallery/{token}/%2e%2e%2f%2e%2e%2fjobs.sqlite3",
                    f"/gallery/{token}/..%5C..%5Cjobs.sqlite3", f"/gallery/{token}/{fox.id}.png%2F..%2F..%2Fjobs.sqlite3",
                    f"/gallery/{token}/{fox.id}.frames%2F00002.png", f"/gallery/{token}/{fox.id.upper()}.png",
                    f"/gallery/{token}/{fox.id}.PNG", f"/gallery/{token}/{fox.id}.sqlite3",
                    f"/gallery/{token}/{fox.id}.png/../../../jobs.sqlite3", f"/gallery/{token}/../../jobs.sqlite3",
                    "/static/..%2Fserver.py", "/static/%2e%2e/server.py", "/static/gallery.js%00.py",
                    "/static/..%5Cserver.py", "/gallery/..%2F..%2Fjobs.sqlite3", "/%2e%2e/%2e%2e/etc/passwd"):
            status, _, body = await fetch(URL(web_url(cfg, raw), encoded=True))
            assert status in (403, 404), raw
            assert b"SQLite format" not in body and b"import" not in body and b"root:" not in body, raw
        # a result file swapped for a symlink to a file outside the results folder is not followed
        outside = tmp_path / "outside.txt"
        outside.write_text("not a picture of yours")
        Path(fox.result_path).unlink()
        os.symlink(outside, fox.result_path)
        status, _, body = await fetch(f"{link}/{fox.id}.png")
        assert status == 404 and b"not a picture" not in body
        assert results.is_dir()

        # a moderator also gets the server's pictures (everyone's) and its status page
        mine, server, state = await gallery_links(fake, w.mod)
        assert f"/gallery/u.{w.mod.id}." in mine and f"/gallery/g.{fake.guild_id}." in server
        assert f"/gallery/s.{fake.guild_id}." in state
        status, _, body = await fetch(server)
        assert status == 200 and b"secret garden" in body and b"a red fox" in body and b"by</dt>" in body
        assert (await fetch(f"{server}/{garden.id}.png"))[0] == 200
        status, _, body = await fetch(state)
        page = body.decode()
        assert status == 200 and "Lanes" in page and "<td>fast</td><td>0</td>" in page
        assert "1 worker, in the bot's own process" in page and "Nothing is waiting" in page
        assert "Today's usage" in page  # the quota's count of each person's GPU time (engine.jobs.quota)
        for who in (w.alice, w.bob):
            assert f"<td>{who.id}</td><td>{format_seconds(bot.queue.quota.usage(str(who.id)).used_s)}</td>" in page
        assert (await fetch(f"{state}/{fox.id}.png"))[0] == 404  # a status link opens no pictures
