"""Numbers and files a Discord client should never send, but a fake or future client may.

discord.py does not enforce ``app_commands.Range``: the engine's ``Request`` has the last word,
and its refusal reaches the person as one short ephemeral line.
"""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from tests.bot.conftest import FakeRunner, make_config, run_bot, wait_ephemeral, wait_results


async def _refused(fake, cfg, options, attachments=None, name="imagine") -> str:
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        user = fake.add_user("mallory")
        inter = await fake.slash(user, fake.channel, name, options, attachments=attachments)
        text = await wait_ephemeral(fake, inter)
        await asyncio.sleep(0.1)
        assert bot.queue.pending() == [] and not bot.queue.jobs_of(str(user.id)), "nothing queued"
        assert not [m for m in inter.messages if not m.ephemeral], "a refusal leaves no public message"
        assert len(text.splitlines()) == 1 and len(text) < 200
        return text


@pytest.mark.parametrize("seed", [2**32, 2**64, -1])
async def test_seed_outside_the_range_is_a_short_refusal(fake, tmp_path, seed):
    text = await _refused(fake, make_config(tmp_path, fake), {"prompt": "a house", "seed": seed, "steps": 2})
    assert "seed" in text and str(2**32 - 1) in text


async def test_a_seed_inside_the_range_reaches_the_runner(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner):
        user = fake.add_user("sam")
        await fake.slash(user, fake.channel, "imagine", {"prompt": "a house", "seed": 2**31, "steps": 2})
        await wait_results(fake)
    assert [r.seed for r in runner.calls] == [2**31]


@pytest.mark.parametrize(("prompt", "expect"), [
    ("a castle:1e39", "prompt weight"),
    ("a castle:1:inf", "prompt stop"),
])
async def test_absurd_prompt_numbers_are_a_short_refusal(fake, tmp_path, prompt, expect):
    text = await _refused(fake, make_config(tmp_path, fake), {"prompt": prompt, "steps": 2})
    assert expect in text and "1000" in text


async def test_an_image_in_an_undocumented_format_is_refused(fake, tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (5, 6, 7)).save(buf, format="TIFF")
    text = await _refused(fake, make_config(tmp_path, fake), {"prompt": "a storm"}, name="edit",
                          attachments={"image": ("photo.png", buf.getvalue(), "image/png")})
    assert "PNG, JPEG, WebP, GIF or BMP" in text

