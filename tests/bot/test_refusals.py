"""Every refusal is a short ephemeral message that says what to change, and queues nothing."""

from __future__ import annotations

import asyncio

import pytest

from tests.bot.conftest import (
    FakeRunner,
    make_config,
    png,
    run_bot,
    wait_ephemeral,
    wait_results,
)


async def _refusal(fake, cfg, user_roles=(), options=None, attachments=None, channel=None, name="imagine"):
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        user = fake.add_user("carol", roles=user_roles)
        inter = await fake.slash(user, channel or fake.channel, name,
                                 options or {"prompt": "a house", "steps": 2}, attachments=attachments)
        text = await wait_ephemeral(fake, inter)
        assert inter.first_response_delay < 3.0
        await asyncio.sleep(0.1)
        assert bot.queue.pending() == [] and not bot.queue.jobs_of(str(user.id))
        assert not [m for m in inter.messages if not m.ephemeral], "a refusal leaves no public message"
        return text


async def test_channel_not_allowed(fake, tmp_path):
    other = fake.add_channel("art")
    text = await _refusal(fake, make_config(tmp_path, fake, allowed_channels=[other.id]))
    assert "channel" in text and f"<#{other.id}>" in text


async def test_guild_not_allowed(fake, tmp_path):
    text = await _refusal(fake, make_config(tmp_path, fake, allowed_guilds=[123]))
    assert "not enabled in this server" in text


async def test_role_required(fake, tmp_path):
    cfg = make_config(tmp_path, fake, allowed_roles=["artists"], allowed_guilds=[fake.guild_id])
    text = await _refusal(fake, cfg)
    assert "roles" in text


async def test_role_allowed_passes(fake, tmp_path):
    cfg = make_config(tmp_path, fake, allowed_roles=["artists"], allowed_guilds=[fake.guild_id])
    async with run_bot(fake, cfg, FakeRunner()):
        user = fake.add_user("dave", roles=["artists"])
        await fake.slash(user, fake.channel, "imagine", {"prompt": "a house", "steps": 2})
        await wait_results(fake)


async def test_prompt_too_long(fake, tmp_path):
    cfg = make_config(tmp_path, fake, limits={"max_prompt_chars": 20})
    text = await _refusal(fake, cfg, options={"prompt": "a" * 30})
    assert "30 characters" in text and "20" in text


async def test_bad_prompt_weights(fake, tmp_path):
    text = await _refusal(fake, make_config(tmp_path, fake), options={"prompt": "a:0|b:0"})
    assert "weight" in text


async def test_steps_over_limit(fake, tmp_path):
    cfg = make_config(tmp_path, fake, limits={"max_steps": 10})
    text = await _refusal(fake, cfg, options={"prompt": "x", "steps": 50})
    assert "steps" in text and "10" in text


async def test_size_over_limit_and_malformed(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    assert "over the limit" in await _refusal(fake, cfg, options={"prompt": "x", "size": "4096x4096"})
    assert "512x384" in await _refusal(fake, cfg, options={"prompt": "x", "size": "big"})


LONG = "9" * 3000  # Discord takes string options of up to 6,000 characters


@pytest.mark.parametrize("name,options,attachments,expect", [
    ("imagine", {"prompt": "x", "size": LONG}, None, "should look like 512x384"),
    ("imagine", {"prompt": "x", "model": LONG}, None, "unknown model"),
    ("imagine", {"prompt": "x", "clip": LONG}, None, "unknown CLIP model"),
    ("cancel", {"job": LONG}, None, "there is no job"),
    ("imagine", {"prompt": "x"}, {"image": (LONG + ".txt", b"hello", "text/plain")}, "text/plain"),
])
async def test_a_refusal_repeats_only_a_short_start_of_a_huge_input(fake, tmp_path, name, options, attachments,
                                                                  expect):
    text = await _refusal(fake, make_config(tmp_path, fake), name=name, options=options, attachments=attachments)
    assert expect in text and text.count("\n") == 0
    assert "9" * 40 + "…" in text and "9" * 41 not in text


@pytest.mark.parametrize("filename,data,ctype,expect", [
    ("notes.txt", b"hello", "text/plain", "text/plain"),
    ("big.png", png((10, 10)) + b"\0" * 3000, "image/png", "limit is"),
    ("huge.png", png((300, 300)), "image/png", "pixels"),
    ("liar.png", b"this is not a png at all" * 10, "image/png", "not an image"),
])
async def test_attachment_checks(fake, tmp_path, filename, data, ctype, expect):
    cfg = make_config(tmp_path, fake, limits={"max_input_bytes": 2048, "max_input_pixels": 256 * 256})
    text = await _refusal(fake, cfg, options={"prompt": "x"}, attachments={"image": (filename, data, ctype)})
    assert expect in text


async def test_pixels_checked_after_download_when_the_payload_does_not_say(fake, tmp_path):
    cfg = make_config(tmp_path, fake, limits={"max_input_pixels": 256 * 256})
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        user = fake.add_user("erin")
        orig = fake._store_attachment

        def no_size(*a, **k):  # a payload without width/height: only the download can tell
            att = orig(*a, **k)
            att.width = att.height = None
            return att

        fake._store_attachment = no_size
        inter = await fake.slash(user, fake.channel, "edit", {"prompt": "x"},
                                 attachments={"image": ("huge.png", png((300, 300)), "image/png")})
        text = await wait_ephemeral(fake, inter)
        assert "300x300" in text and inter.deferred
        await asyncio.sleep(0.1)
        assert bot.queue.pending() == []
        assert not [m for m in inter.messages if not m.ephemeral]


async def test_pending_limit(fake, tmp_path):
    cfg = make_config(tmp_path, fake, queue={"per_owner_pending": 1})
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    async with run_bot(fake, cfg, runner):
        user = fake.add_user("frank")
        first = await fake.slash(user, fake.channel, "imagine", {"prompt": "one", "steps": 2})
        await fake.wait_for(lambda: first.original and not first.original.loading)
        second = await fake.slash(user, fake.channel, "imagine", {"prompt": "two", "steps": 2})
        text = await wait_ephemeral(fake, second)
        assert "1 jobs waiting" in text or "limit" in text
        hold.set()


async def test_mask_shape_must_match(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    text = await _refusal(fake, cfg, name="edit", options={"prompt": "x"},
                          attachments={"image": ("a.png", png((64, 32)), "image/png"),
                                       "mask": ("m.png", png((32, 32)), "image/png")})
    assert "mask" in text and "shape" in text


async def test_gesture_refusal_in_a_disallowed_channel_is_a_short_notice(fake, tmp_path):
    other = fake.add_channel("art")
    cfg = make_config(tmp_path, fake, allowed_channels=[other.id])
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        user = fake.add_user("gina")
        msg = await fake.user_message(user, fake.channel, f"<@{fake.bot_user.id}> a sunny beach",
                                      attachments=[("p.png", png(), "image/png")])
        notice = await fake.wait_for(lambda: [m for m in fake.bot_messages(fake.channel) if m.reply_to == msg.id])
        assert "channel" in notice[0].content
        assert bot.queue.pending() == []
