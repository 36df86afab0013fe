"""Attachments people send: fetched only from Discord, counted while they download, shrunk once,
and safe when several people send the same picture at the same moment."""

from __future__ import annotations

import asyncio
import io

import aiohttp
import pytest
import yarl
from PIL import Image

from bot.app import VQGANBot
from engine.queue import JobQueue
from tests.bot.conftest import (
    FakeRunner,
    ephemeral_text,
    make_config,
    png,
    run_bot,
    submitted,
    wait_ephemeral,
)


def _tracer(seen: list[yarl.URL]) -> aiohttp.TraceConfig:
    """Every HTTP request the bot's client starts, whatever it is for."""
    trace = aiohttp.TraceConfig()

    async def on_start(session: aiohttp.ClientSession, ctx: object, params: aiohttp.TraceRequestStartParams) -> None:
        seen.append(yarl.URL(params.url))

    trace.on_request_start.append(on_start)
    return trace


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/cat.png",  # a cloud metadata service
    "http://127.0.0.1:9/cat.png",  # a port on the bot's own host
])
async def test_an_attachment_whose_payload_points_off_discord_is_never_fetched(fake, tmp_path, url):
    seen: list[yarl.URL] = []
    cfg = make_config(tmp_path, fake)
    bot = VQGANBot(cfg, JobQueue(cfg, runner=FakeRunner()), http_trace=_tracer(seen))
    forged = yarl.URL(url)
    async with fake.running(bot):
        mallory = fake.add_user("mallory")
        inter = await fake.slash(mallory, fake.channel, "edit", {"prompt": "a fur coat"},
                                 attachments={"image": ("cat.png", png(), "image/png")},
                                 attachment_urls={"image": url})
        await fake.wait_for(lambda: ephemeral_text(fake, inter) or any(u.host == forged.host for u in seen))
        await asyncio.sleep(0.1)
        assert [u for u in seen if (u.host, u.port) == (forged.host, forged.port)] == []
        assert "not on Discord" in ephemeral_text(fake, inter)
        assert fake.cdn_requests == [] and not bot.queue.jobs_of(str(mallory.id))


async def test_downloads_in_progress_count_against_the_pending_limit(fake, tmp_path):
    cfg = make_config(tmp_path, fake, queue={"per_owner_pending": 1})
    runner = FakeRunner()
    runner.gate = lambda req: False  # jobs wait in line
    fake.cdn_delay = 1.0
    async with run_bot(fake, cfg, runner) as bot:
        alice = fake.add_user("alice")
        first = await fake.slash(alice, fake.channel, "edit", {"prompt": "a fur coat"},
                                 attachments={"image": ("a.png", png(colour=(1, 2, 3)), "image/png")})
        await fake.wait_for(lambda: len(fake.cdn_requests) == 1)  # still downloading
        second = await fake.slash(alice, fake.channel, "edit", {"prompt": "a straw hat"},
                                  attachments={"image": ("b.png", png(colour=(4, 5, 6)), "image/png")})
        text = await wait_ephemeral(fake, second)
        assert "limit 1" in text and second.first_response_delay < 1.0
        job = await submitted(fake, bot, first)
        assert job.request.prompt == "a fur coat"
        assert len(fake.cdn_requests) == 1, "the refused request downloaded nothing"
        assert [j.id for j in bot.queue.jobs_of(str(alice.id))] == [job.id]


def _big_png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.linear_gradient("L").resize(size).convert("RGB").save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


async def test_a_huge_upload_is_kept_at_no_more_than_twice_the_largest_working_size(fake, tmp_path):
    limits = {"max_width": 256, "max_height": 256, "max_pixels": 256 * 192}
    cfg = make_config(tmp_path, fake, limits=limits)
    runner = FakeRunner()
    runner.gate = lambda req: False
    async with run_bot(fake, cfg, runner) as bot:
        bob = fake.add_user("bob")
        inter = await fake.slash(bob, fake.channel, "edit", {"prompt": "at night"},
                                 attachments={"image": ("huge.png", _big_png((3000, 2000)), "image/png")})
        job = await submitted(fake, bot, inter)
        with Image.open(job.request.init_image) as stored:
            w, h = stored.size
        assert w <= 2 * limits["max_width"] and h <= 2 * limits["max_height"]
        assert w * h <= 4 * limits["max_pixels"]
        assert w * h >= limits["max_pixels"] * 0.9, "never below the largest size a job may paint"
        assert abs(w / h - 1.5) < 0.02
        assert (job.request.width, job.request.height) == (job.request.width // 16 * 16, job.request.height // 16 * 16)


def _noise_png(seed: int, size: tuple[int, int] = (384, 384)) -> bytes:
    """A picture whose PNG takes a while to write (noise does not compress)."""
    buf = io.BytesIO()
    Image.merge("RGB", [Image.effect_noise(size, 60 + seed)] * 3).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.parametrize("pieces", [1, 2], ids=["one picture", "a collage"])
async def test_four_people_editing_the_same_picture_at_once_all_get_their_job(fake, tmp_path, pieces):
    cfg = make_config(tmp_path, fake)
    runner = FakeRunner()
    runner.gate = lambda req: False
    fake.cdn_delay = 0.2  # the four downloads end together
    pictures = [_noise_png(i) for i in range(pieces)]
    async with run_bot(fake, cfg, runner) as bot:
        people = [fake.add_user(f"painter{i}") for i in range(4)]
        atts = {name: (f"{name}.png", data, "image/png") for name, data in zip(("image", "image2")[:pieces], pictures, strict=True)}
        inters = await asyncio.gather(*(
            fake.slash(p, fake.channel, "edit", {"prompt": "in the snow"}, attachments=atts) for p in people))
        jobs = [await submitted(fake, bot, i) for i in inters]
        assert all(ephemeral_text(fake, i) == "" for i in inters), [ephemeral_text(fake, i) for i in inters]
        assert len({j.request.init_image for j in jobs}) == 1  # the same stored picture for all
        with Image.open(jobs[0].request.init_image) as im:
            im.load()
        uploads = cfg.discord.data_path / "uploads"
        assert list(uploads.glob("*.tmp")) == []


async def test_a_cdn_redirect_off_discord_is_not_followed(fake, tmp_path):
    seen: list[yarl.URL] = []
    cfg = make_config(tmp_path, fake)
    bot = VQGANBot(cfg, JobQueue(cfg, runner=FakeRunner()), http_trace=_tracer(seen))
    async with fake.running(bot):
        fake.cdn_redirects["cat.png"] = "http://127.0.0.1:9/latest/meta-data/cat.png"
        fake.cdn_redirects["dog.png"] = f"{fake.api_base}/attachments/1/2/moved-dog.png"
        fake.cdn_bodies["moved-dog.png"] = png()
        mallory = fake.add_user("mallory")
        inter = await fake.slash(mallory, fake.channel, "edit", {"prompt": "a fur coat"},
                                 attachments={"image": ("cat.png", png(), "image/png")})
        text = await wait_ephemeral(fake, inter)
        assert text.count("\n") == 0 and "leads off Discord" in text
        assert [u for u in seen if u.port == 9] == [] and not bot.queue.jobs_of(str(mallory.id))
        # a redirect that stays on Discord's CDN is followed
        inter = await fake.slash(mallory, fake.channel, "edit", {"prompt": "a fur coat"},
                                 attachments={"image": ("dog.png", png(), "image/png")})
        assert await submitted(fake, bot, inter)


async def test_a_download_larger_than_its_payload_said_is_stopped_at_the_limit(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    limit = cfg.limits.max_input_bytes
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        fake.cdn_bodies["small.png"] = b"\x89PNG" + bytes(limit * 3)  # the payload says a few hundred bytes
        mallory = fake.add_user("mallory")
        inter = await fake.slash(mallory, fake.channel, "edit", {"prompt": "a fur coat"},
                                 attachments={"image": ("small.png", png(), "image/png")})
        text = await wait_ephemeral(fake, inter)
        assert "larger than the" in text and "MiB limit" in text
        assert not bot.queue.jobs_of(str(mallory.id))
        await asyncio.sleep(0.2)
        assert fake.cdn_sent["small.png"] < 2 * limit  # it stopped reading near the limit, not at the end
