"""Talking to the bot with images: replies, mentions and the context menu (bot/cogs/gestures.py, bot/editing.py)."""

from __future__ import annotations

import asyncio

from tests.bot.conftest import (
    FakeRunner,
    job_of,
    make_config,
    png,
    run_bot,
    wait_ephemeral,
    wait_results,
)


def _notices(fake, to):
    return [m for m in fake.bot_messages() if m.reply_to == to.id and "⚠️" in m.content]


async def test_reply_attaching_an_image_with_text_edits_the_attached_image(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        other = await fake.user_message(alice, fake.channel, "hello",
                                        attachments=[("a.png", png((32, 32), (1, 2, 3)), "image/png")])
        mine = await fake.user_message(bob, fake.channel, "make it a watercolour", reply_to=other,
                                       attachments=[("b.png", png((48, 32), (9, 9, 9)), "image/png")])
        [result] = await wait_results(fake)
        assert runner.calls[0].width > runner.calls[0].height  # bob's image, not alice's
        job = (await job_of(fake, bot, result))
        assert fake.message(job.origin["status_message_id"]).reply_to == mine.id
        assert "🔁" in await fake.wait_for(lambda: result.reactions)


async def test_mentioning_the_bot_with_an_image_and_text_edits_it(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner):
        alice = fake.add_user("alice")
        msg = await fake.user_message(alice, fake.channel, f"<@{fake.bot_user.id}> turn this into a mosaic",
                                      attachments=[("a.png", png(), "image/png")])
        [result] = await wait_results(fake)
        assert runner.calls[0].prompt == "turn this into a mosaic" and runner.calls[0].kind == "edit"
        status = [m for m in fake.bot_messages() if m.reply_to == msg.id][0]
        assert result.channel_id == fake.thread_for(status).id


async def test_reply_with_an_image_and_no_text_gets_a_howto(fake, tmp_path):
    async with run_bot(fake, make_config(tmp_path, fake), FakeRunner()) as bot:
        alice = fake.add_user("alice")
        target = await fake.user_message(alice, fake.channel, "hi")
        msg = await fake.user_message(alice, fake.channel, "", reply_to=target,
                                      attachments=[("a.png", png(), "image/png")])
        [n] = await fake.wait_for(lambda: _notices(fake, msg))
        assert "reply to it with words" in n.content
        assert bot.queue.pending() == []


async def test_arrow_prompts_are_region_edits_and_an_empty_side_gets_a_howto(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice = fake.add_user("alice")
        upload = await fake.user_message(alice, fake.channel, "", attachments=[("a.png", png(), "image/png")])
        await fake.user_message(alice, fake.channel, "the cat → a small dog", reply_to=upload)
        await wait_results(fake)
        req = runner.calls[0]
        assert (req.kind, req.region, req.prompt) == ("edit", "the cat", "a small dog")
        half = await fake.user_message(alice, fake.channel, "cat ->", reply_to=upload)
        [n] = await fake.wait_for(lambda: _notices(fake, half))
        assert "what to change -> what it becomes" in n.content
        assert bot.queue.pending() == [] and len(runner.calls) == 1


async def test_context_menu_opens_a_modal_then_edits(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        assert fake.find_command("Edit with VQGAN", 3)[0] is not None
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        upload = await fake.user_message(alice, fake.channel, "", attachments=[("a.png", png((64, 64)), "image/png")])
        inter = await fake.context_menu(bob, fake.channel, upload, "Edit with VQGAN")
        cb = await inter.wait_response()
        assert cb.type == 9 and inter.modal["title"] == "Edit with VQGAN"
        field_id = inter.modal["components"][0]["components"][0]["custom_id"]
        submit = await fake.modal_submit(bob, fake.channel, inter.modal["custom_id"], {field_id: "a stained glass window"})
        assert (await submit.wait_response()).type == 5
        [result] = await wait_results(fake)
        assert runner.calls[0].prompt == "a stained glass window" and runner.calls[0].kind == "edit"
        assert (await job_of(fake, bot, result)).owner == str(bob.id)


async def test_the_edit_form_refuses_words_that_show_nothing(fake, tmp_path):
    """Zero-width spaces fill the form's required field but say nothing: refused like an empty prompt."""
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice = fake.add_user("alice")
        upload = await fake.user_message(alice, fake.channel, "", attachments=[("a.png", png((64, 64)), "image/png")])
        for words, expect in (("\u200b\u200b\u200b", "prompt is empty"),
                              ("\u200b -> \u2060", "what to change -> what it becomes")):
            inter = await fake.context_menu(alice, fake.channel, upload, "Edit with VQGAN")
            await inter.wait_response()
            field_id = inter.modal["components"][0]["components"][0]["custom_id"]
            sent = await fake.modal_submit(alice, fake.channel, inter.modal["custom_id"], {field_id: words})
            assert expect in await wait_ephemeral(fake, sent)
        await asyncio.sleep(0.2)
        assert bot.queue.pending() == [] and runner.calls == [] and not bot.queue.jobs_of(str(alice.id))


async def test_context_menu_refusals(fake, tmp_path):
    other = fake.add_channel("art")
    async with run_bot(fake, make_config(tmp_path, fake, allowed_channels=[other.id]), FakeRunner()):
        alice = fake.add_user("alice")
        upload = await fake.user_message(alice, fake.channel, "", attachments=[("a.png", png(), "image/png")])
        inter = await fake.context_menu(alice, fake.channel, upload, "Edit with VQGAN")
        assert "channel" in await wait_ephemeral(fake, inter)
        plain = await fake.user_message(alice, other, "no image here")
        inter = await fake.context_menu(alice, other, plain, "Edit with VQGAN")
        assert "no image" in await wait_ephemeral(fake, inter)


async def test_several_images_become_one_collage_and_it_says_so(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice = fake.add_user("alice")
        upload = await fake.user_message(alice, fake.channel, "", attachments=[
            ("wide.png", png((64, 32)), "image/png"), ("tall.png", png((32, 64)), "image/png")])
        await fake.user_message(alice, fake.channel, "an oil painting", reply_to=upload)
        [result] = await wait_results(fake)
        req = runner.calls[0]
        assert req.width > req.height and req.mask and "collage-" in req.init_image  # 2:1 + 1:2 side by side
        job = (await job_of(fake, bot, result))
        await fake.wait_for(lambda: "collage of 2 images" in fake.message(job.origin["status_message_id"]).content)


async def test_a_reply_to_a_reply_follows_the_chain_to_the_image(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner):
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        upload = await fake.user_message(alice, fake.channel, "", attachments=[("a.png", png((64, 32)), "image/png")])
        chat = await fake.user_message(bob, fake.channel, "in autumn", reply_to=upload)  # edits the upload
        await fake.wait_for(lambda: runner.calls)
        await fake.user_message(alice, fake.channel, "as a pencil sketch", reply_to=chat)
        await wait_results(fake, 2)
        first, second = runner.calls
        assert second.prompt == "as a pencil sketch" and second.init_image == first.init_image


async def test_plain_chat_is_ignored(fake, tmp_path):
    async with run_bot(fake, make_config(tmp_path, fake), FakeRunner()) as bot:
        alice = fake.add_user("alice")
        first = await fake.user_message(alice, fake.channel, "hello")
        await fake.user_message(alice, fake.channel, "hi back", reply_to=first)
        await asyncio.sleep(0.3)
        assert fake.bot_messages() == [] and bot.queue.pending() == []
