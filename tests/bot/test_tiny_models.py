"""The real engine on the tiny models behind the bot: /imagine, reply-to-edit, /edit with a mask."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image

from tests.bot.conftest import (
    job_of,
    make_config,
    png,
    progress_posts,
    results,
    run_bot,
    wait_ephemeral,
    wait_results,
)


@pytest.fixture
def cfg(tiny_cfg, fake, tmp_path):
    return make_config(tmp_path, fake, tiny_cfg)


async def test_imagine_with_the_tiny_models(fake, cfg):
    async with run_bot(fake, cfg) as bot:
        user = fake.add_user("alice")
        inter = await fake.slash(user, fake.channel, "imagine", {"prompt": "a forest rendered in low poly",
                                                                 "seed": 5, "steps": 4})
        await inter.wait_response()
        assert inter.first_response_delay < 3.0
        [result] = await wait_results(fake, timeout=60)
        assert result.channel_id == fake.thread_for(inter.original).id
        assert progress_posts(fake)
        job = (await job_of(fake, bot, result))
        assert job.request.seed == 5
        assert Image.open(io.BytesIO(result.attachments[0].data)).size == (32, 32)


async def test_reply_edit_and_masked_edit_with_the_tiny_models(fake, cfg):
    async with run_bot(fake, cfg) as bot:
        alice = fake.add_user("alice")
        upload = await fake.user_message(alice, fake.channel, "",
                                         attachments=[("cat.png", png((32, 32), (10, 120, 200)), "image/png")])
        await fake.user_message(alice, fake.channel, "a cat made of fire", reply_to=upload)
        [edited] = await wait_results(fake, timeout=60)
        job = (await job_of(fake, bot, edited))
        assert job.request.kind == "edit" and job.request.init_image

        mask = Image.new("L", (32, 32), 0)
        mask.paste(255, (0, 0, 16, 32))  # left half may change
        buf = io.BytesIO()
        mask.save(buf, format="PNG")
        source = png((32, 32), (10, 120, 200))
        inter = await fake.slash(alice, fake.channel, "edit", {"prompt": "sunset", "steps": 4, "seed": 3},
                                 attachments={"image": ("in.png", source, "image/png"),
                                              "mask": ("mask.png", buf.getvalue(), "image/png")})
        await inter.wait_response()
        masked = (await wait_results(fake, 2, timeout=60))[1]
        job = (await job_of(fake, bot, masked))
        assert job.request.mask and job.request.kind == "edit"
        out = Image.open(io.BytesIO(masked.attachments[0].data)).convert("RGB")
        # far from the mask (beyond the feather), the input's own pixels are kept exactly
        assert out.getpixel((31, 16)) == (10, 120, 200)


async def test_status_says_loading_while_the_models_load(fake, cfg):
    async with run_bot(fake, cfg):
        user = fake.add_user("alice")
        inter = await fake.slash(user, fake.channel, "imagine", {"prompt": "a lighthouse", "seed": 2, "steps": 4})
        await inter.wait_response()
        await wait_results(fake, timeout=60)
    lines = [r.json.get("content", "") for r in fake.requests_to("PATCH", r"/messages/\d+$")
             if isinstance(r.json, dict) and str(inter.original.id) in r.path]
    loading = [i for i, line in enumerate(lines) if "⏳ loading VQGAN" in line]
    assert loading, lines
    assert any("painting" in line for line in lines[loading[0] + 1:]), lines


async def test_a_model_that_was_never_downloaded_is_refused_before_queueing_on_an_offline_machine(
        fake, tiny_cfg, tmp_path):
    # The operator offers WikiArt but never downloaded it, and this machine has no network.
    models = {**tiny_cfg.models.model_dump(), "vqgan_choices": ["wikiart_16384"], "offline": True}
    cfg = make_config(tmp_path, fake, tiny_cfg.model_validate({**tiny_cfg.model_dump(), "models": models}))
    async with run_bot(fake, cfg) as bot:
        for _ in range(200):  # the bot surveys its models in the background as it starts
            if bot.queue.availability() != [None]:
                break
            await asyncio.sleep(0.05)
        carol = fake.add_user("carol")
        offered = await fake.autocomplete(carol, fake.channel, "imagine", "model", options={"prompt": "a cat"})
        assert [c["name"] for c in offered] == ["imagenet_f16_16384", "wikiart_16384 (not downloaded, offline)"]
        assert offered[1]["value"] == "wikiart_16384"
        inter = await fake.slash(carol, fake.channel, "imagine", {"prompt": "a cat", "model": "wikiart_16384"})
        text = await wait_ephemeral(fake, inter)
        assert text.count("\n") == 0
        assert "wikiart_16384 is not downloaded, and this machine is offline" in text
        assert "available: model imagenet_f16_16384" in text  # the configured model, on disk
        assert bot.queue.pending() == [] and not results(fake)
        # what is on disk still paints
        inter = await fake.slash(carol, fake.channel, "imagine", {"prompt": "a cat", "steps": 2, "seed": 1})
        [result] = await wait_results(fake, timeout=60)
        assert (await job_of(fake, bot, result)).request.models.vqgan_key().startswith("file:")
