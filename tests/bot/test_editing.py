"""Editing by words in Discord, end to end with the tiny models: regions, `a -> b`, 🎲, collages."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bot.config import BotConfig
from bot.editing import compose, split_arrow
from engine.errors import UserError
from engine.media.imageio import read_metadata
from tests.bot.conftest import FakeRunner, job_of, make_config, png, run_bot, wait_results


@pytest.fixture
def cfg(tiny_cfg, fake, tmp_path):
    return make_config(tmp_path, fake, tiny_cfg)


def request_of(message) -> dict:
    """The request the engine really ran, from the posted PNG's metadata."""
    return read_metadata(message.attachments[0].data)["request"]


def masks(fake) -> list:
    return [m for m in fake.bot_messages() if m.attachments and m.attachments[0].filename.startswith("mask-")]


def holed(size: tuple[int, int] = (32, 32), hole: tuple[int, int, int, int] = (12, 12, 20, 20)) -> bytes:
    """An opaque picture with a transparent square in it."""
    img = Image.new("RGBA", size, (10, 120, 200, 255))
    img.paste((0, 0, 0, 0), hole)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


async def test_edit_with_a_region_shows_the_mask_clip_found(fake, cfg):
    async with run_bot(fake, cfg) as bot:
        alice = fake.add_user("alice")
        inter = await fake.slash(alice, fake.channel, "edit", {"prompt": "fur", "region": "jacket", "steps": 2},
                                 attachments={"image": ("me.png", png((32, 32), (90, 60, 30)), "image/png")})
        await inter.wait_response()
        [result] = await wait_results(fake, timeout=60)
        ran = request_of(result)
        assert (ran["kind"], ran["region"], ran["prompt"]) == ("edit", "jacket", "fur")
        [mask] = await fake.wait_for(lambda: masks(fake))
        thread = fake.thread_for(inter.original)
        assert mask.channel_id == result.channel_id == thread.id and mask.id < result.id
        assert "jacket" in mask.content
        assert Image.open(io.BytesIO(mask.attachments[0].data)).size == (32, 32)
        assert len(result.attachments) == 1  # replying to the result edits the picture, not the mask
        assert (await job_of(fake, bot, result)).origin["mask_message_id"] == mask.id


async def test_reply_a_arrow_b_is_a_region_edit(fake, cfg):
    async with run_bot(fake, cfg):
        alice = fake.add_user("alice")
        upload = await fake.user_message(alice, fake.channel, "",
                                         attachments=[("me.png", png((32, 32), (90, 60, 30)), "image/png")])
        await fake.user_message(alice, fake.channel, "jacket -> fur", reply_to=upload)
        [result] = await wait_results(fake, timeout=60)
        ran = request_of(result)
        assert (ran["kind"], ran["region"], ran["prompt"]) == ("edit", "jacket", "fur")
        assert ran["keep_structure"] == cfg.editing.keep_structure
        assert await fake.wait_for(lambda: masks(fake))


async def test_dice_reaction_gives_a_variation_of_the_result(fake, cfg):
    async with run_bot(fake, cfg) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        await fake.slash(alice, fake.channel, "imagine", {"prompt": "a red barn", "seed": 7, "steps": 4})
        [first] = await wait_results(fake, timeout=60)
        parent = await job_of(fake, bot, first)
        assert "🎲" in await fake.wait_for(lambda: "🎲" in first.reactions and first.reactions)
        assert "🎲" in first.content  # the hint line says what it does
        await fake.react(bob, first, "🎲")
        second = (await wait_results(fake, 2, timeout=60))[1]
        ran = request_of(second)
        assert ran["kind"] == "vary" and ran["parent"] == parent.id and ran["prompt"] == "a red barn"
        assert ran["seed"] != 7 and ran["steps"] == max(1, round(4 * cfg.editing.vary_strength)) < 4
        assert ran["init_image"] == parent.result_path and ran["keep_structure"] == cfg.editing.keep_structure
        assert (ran["width"], ran["height"]) == Image.open(parent.result_path).size
        child = await job_of(fake, bot, second)
        assert child.owner == str(bob.id) and second.channel_id == first.channel_id
        assert "variation of job" in fake.message(child.origin["status_message_id"]).content

        Path(parent.result_path).unlink()  # pruned: a short notice instead of a job
        await fake.react(alice, first, "🎲")
        notice = await fake.wait_for(lambda: [m for m in fake.bot_messages() if "is gone" in m.content])
        assert notice and bot.queue.pending() == []


async def test_a_transparent_png_is_a_collage_edit(fake, cfg):
    async with run_bot(fake, cfg) as bot:
        alice = fake.add_user("alice")
        inter = await fake.slash(alice, fake.channel, "edit", {"prompt": "a stone bridge", "steps": 2},
                                 attachments={"image": ("holes.png", holed(), "image/png")})
        await inter.wait_response()
        [result] = await wait_results(fake, timeout=60)
        job = await job_of(fake, bot, result)
        mask = Image.open(job.request.mask).convert("L")
        assert mask.getpixel((16, 16)) == 255 and mask.getpixel((0, 0)) == 0  # the hole, not the far corner
        canvas = Image.open(job.request.init_image)
        assert canvas.mode == "RGB" and canvas.getpixel((0, 0)) == (10, 120, 200)
        [shown] = await fake.wait_for(lambda: masks(fake))
        assert shown.channel_id == result.channel_id
        assert "transparent" in fake.message(job.origin["status_message_id"]).content


async def test_several_attachments_become_one_collage(fake, cfg):
    async with run_bot(fake, cfg) as bot:
        alice = fake.add_user("alice")
        await fake.user_message(alice, fake.channel, f"<@{fake.bot_user.id}> a diptych", attachments=[
            ("a.png", png((32, 32), (200, 40, 40)), "image/png"),
            ("b.png", png((32, 32), (40, 40, 200)), "image/png")])
        [result] = await wait_results(fake, timeout=60)
        job = await job_of(fake, bot, result)
        ran = request_of(result)
        assert ran["kind"] == "edit" and ran["width"] > ran["height"] and "collage-" in ran["mask"]
        mask = Image.open(job.request.mask).convert("L")
        assert mask.getpixel((mask.width // 2, mask.height // 2)) == 255 and mask.getpixel((0, 0)) == 0
        assert "collage of 2 images" in fake.message(job.origin["status_message_id"]).content


async def test_edit_sends_region_and_mask_together(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner):
        alice = fake.add_user("alice")
        inter = await fake.slash(alice, fake.channel, "edit", {"prompt": "a sports car -> a horse", "steps": 2},
                                 attachments={"image": ("in.png", png((32, 32)), "image/png"),
                                              "mask": ("m.png", png((32, 32), mode="L"), "image/png")})
        await inter.wait_response()
        await wait_results(fake)
        req = runner.calls[0]
        assert (req.region, req.prompt) == ("a sports car", "a horse") and req.mask
        assert masks(fake) == []  # the person's own mask is not shown back


def test_split_arrow():
    assert split_arrow("a jacket -> a fur coat") == ("a jacket", "a fur coat")
    assert split_arrow("sky→fire") == ("sky", "fire")
    assert split_arrow("a castle:1|fog:-0.5") == (None, "a castle:1|fog:-0.5")
    for bad in ("-> fur", "jacket ->", "→"):
        with pytest.raises(UserError, match="what to change"):
            split_arrow(bad)


def test_compose_transparent_with_a_mask_repaints_either(tmp_path):
    cfg = BotConfig.model_validate({"generation": {"width": 32, "height": 32},
                                    "discord": {"data_dir": str(tmp_path)}, "editing": {"seam": 0}})
    src, user_mask = tmp_path / "in.png", tmp_path / "mask.png"
    src.write_bytes(holed())
    m = Image.new("L", (32, 32), 0)
    m.paste(255, (0, 0, 4, 4))
    m.save(user_mask)
    edit = compose(cfg, [src], user_mask)
    out = Image.open(edit.mask)
    assert out.getpixel((1, 1)) == 255 and out.getpixel((16, 16)) == 255 and out.getpixel((30, 30)) == 0
    with pytest.raises(UserError, match="mask goes with one image"):
        compose(cfg, [src, src], user_mask)
    plain = tmp_path / "plain.png"
    plain.write_bytes(png((64, 32)))
    assert compose(cfg, [plain]).init == plain  # nothing transparent: the upload itself


async def test_context_menu_takes_an_arrow_and_several_images(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner):
        alice = fake.add_user("alice")
        upload = await fake.user_message(alice, fake.channel, "", attachments=[
            ("a.png", png((32, 32)), "image/png"), ("b.png", png((32, 32), (0, 0, 255)), "image/png")])
        inter = await fake.context_menu(alice, fake.channel, upload, "Edit with VQGAN")
        await inter.wait_response()
        field_id = inter.modal["components"][0]["components"][0]["custom_id"]
        await fake.modal_submit(alice, fake.channel, inter.modal["custom_id"], {field_id: "sky -> fire"})
        await wait_results(fake)
        req = runner.calls[0]
        assert (req.region, req.prompt) == ("sky", "fire") and "collage-" in (req.mask or "")


def test_uploads_keep_their_transparency():
    from bot.uploads import decode_image

    pal = Image.new("P", (8, 8), 0)
    pal.putpalette([0, 0, 0, 255, 255, 255])
    pal.paste(1, (0, 0, 4, 8))
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)  # palette entry 0 is transparent
    img = decode_image(BotConfig(), buf.getvalue())
    assert img.mode == "RGBA" and img.getpixel((6, 4))[3] == 0 and img.getpixel((1, 4))[3] == 255
    assert decode_image(BotConfig(), holed()).mode == "RGBA"
