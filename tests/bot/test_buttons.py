"""Buttons under results and status messages, pressed through the fake Discord, before and after restarts."""

from __future__ import annotations

import asyncio
import io
import os
import time

import av
from PIL import Image

from engine.jobs.events import JobCancelled
from engine.media.timelapse import frame_files
from tests.bot.conftest import (
    FakeRunner,
    ephemeral_text,
    job_of,
    make_config,
    png,
    results,
    run_bot,
    submitted,
    wait_ephemeral,
    wait_results,
)

RESULT_BUTTONS = ["rerun", "vary", "edit", "timelapse", "details",
                  "upscale", "zoomout15", "zoomout2", "panleft", "panright", "panup", "pandown"]


def buttons(message) -> dict[str, dict]:
    """The message's buttons by action (``vqgan:<action>:<job id>``)."""
    return {c["custom_id"].split(":")[1]: c for row in message.components for c in row.get("components", [])}


async def press(fake, user, message, action: str):
    """``user`` presses ``action`` on ``message``; the press is answered within Discord's 3 s."""
    inter = await fake.button_click(user, fake.message(message.id), buttons(fake.message(message.id))[action]
                                    ["custom_id"])
    await inter.wait_response()
    assert inter.first_response_delay < 3.0
    return inter


async def a_result(fake, bot, user, prompt="a red barn", **options):
    inter = await fake.slash(user, fake.channel, "imagine", {"prompt": prompt, "seed": 7, "steps": 4, **options})
    job = await submitted(fake, bot, inter)
    result = await fake.wait_for(lambda: [r for r in results(fake) if prompt in r.content])
    await fake.wait_for(lambda: bot.queue.find(result_message_id=result[0].id))
    return job, result[0], inter


async def test_every_result_has_the_five_buttons_and_rerun_and_vary_make_the_pressers_jobs(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        job, result, _ = await a_result(fake, bot, alice)
        shown = buttons(result)
        assert list(shown) == RESULT_BUTTONS
        assert all(c["custom_id"].endswith(f":{job.id}") for c in shown.values())
        assert [c["emoji"]["name"] for c in shown.values()] == ["🔁", "🎲", "✏️", "🎞️", "ℹ️", "✨", "🔍", "🔍",
                                                               "⬅️", "➡️", "⬆️", "⬇️"]
        assert "🔁" in await fake.wait_for(lambda: result.reactions)  # the reactions are still offered

        await press(fake, bob, result, "rerun")
        second = (await wait_results(fake, 2))[1]
        rerun = await job_of(fake, bot, second)
        assert rerun.owner == str(bob.id) and rerun.request.parent == job.id and rerun.request.seed != 7
        assert rerun.request.prompt == "a red barn" and rerun.origin["rerun_of"] == job.id

        await press(fake, bob, result, "vary")
        third = (await wait_results(fake, 3))[2]
        vary = await job_of(fake, bot, third)
        assert vary.request.kind == "vary" and vary.owner == str(bob.id) and vary.origin["variation_of"] == job.id
        assert list(buttons(third)) == RESULT_BUTTONS  # results of buttons have buttons too


async def test_details_shows_the_request_and_the_rerun_line_only_to_the_presser(fake, tmp_path):
    async with run_bot(fake, make_config(tmp_path, fake), FakeRunner()) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        job, result, _ = await a_result(fake, bot, alice, prompt="a quiet harbour")
        inter = await press(fake, bob, result, "details")
        text = await wait_ephemeral(fake, inter)
        job = bot.queue.get(job.id)
        assert "a quiet harbour" in text and "seed `7`" in text and "ViT-B-32" in text and "took" in text
        assert f"python -m engine rerun vqgan-{job.request.seed}.png -o {job.id}-rerun.png" in text
        assert str(job.result_path) not in text  # no path on the bot's server
        assert '"steps": 4' in text and len(text) <= 2000
        assert not [m for m in inter.messages if not m.ephemeral]


async def test_buttons_keep_working_after_a_restart(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        job, result, _ = await a_result(fake, bot, alice)
    runner = FakeRunner()
    async with run_bot(fake, cfg, runner) as bot2:
        text = await wait_ephemeral(fake, await press(fake, bob, result, "details"))
        assert job.id in text
        await press(fake, bob, result, "rerun")
        second = (await wait_results(fake, 2))[1]
        assert (await job_of(fake, bot2, second)).request.parent == job.id
        assert runner.calls[0].prompt == "a red barn"


async def test_edit_button_asks_for_words_and_an_optional_part(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        job, result, _ = await a_result(fake, bot, alice)
        inter = await press(fake, bob, result, "edit")
        assert inter.responses[0].type == 9  # a form
        fields = [row["components"][0] for row in inter.modal["components"]]
        assert [f.get("required", True) for f in fields] == [True, False]
        prompt_id, region_id = fields[0]["custom_id"], fields[1]["custom_id"]
        await fake.modal_submit(bob, result.channel_id, inter.modal["custom_id"],
                                {prompt_id: "a fur coat", region_id: "the barn door"}, message=result)
        second = (await wait_results(fake, 2))[1]
        edit = await job_of(fake, bot, second)
        assert (edit.request.kind, edit.request.prompt, edit.request.region) == ("edit", "a fur coat", "the barn door")
        assert edit.request.parent == job.id and edit.owner == str(bob.id)

        inter = await press(fake, alice, result, "edit")  # no part: the whole picture (or `a -> b`)
        await fake.modal_submit(alice, result.channel_id, inter.modal["custom_id"],
                                {prompt_id: "sky -> fire", region_id: ""}, message=result)
        third = (await wait_results(fake, 3))[2]
        assert ((await job_of(fake, bot, third)).request.region, runner.calls[-1].prompt) == ("sky", "fire")


async def test_cancel_button_refuses_a_stranger_and_obeys_the_owner(fake, tmp_path):
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice, mallory = fake.add_user("alice"), fake.add_user("mallory")
        inter = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a slow painting", "steps": 2})
        job = await submitted(fake, bot, inter)
        status = inter.original
        await fake.wait_for(lambda: "cancel" in buttons(status) and bot.queue.get(job.id).state == "running")
        assert buttons(status)["cancel"]["emoji"]["name"] == "❌"

        refusal = await wait_ephemeral(fake, await press(fake, mallory, status, "cancel"))
        assert "Only the person who asked" in refusal
        await asyncio.sleep(0.2)
        assert bot.queue.get(job.id).state == "running" and "cancel" in buttons(status)

        await press(fake, alice, status, "cancel")
        await fake.wait_for(lambda: bot.queue.get(job.id).state == "cancelled")
        await fake.wait_for(lambda: "cancelled" in fake.message(status.id).content and not buttons(status))
        hold.set()
        await asyncio.sleep(0.2)
        assert results(fake) == []


async def test_cancel_button_goes_when_the_job_ends(fake, tmp_path):
    async with run_bot(fake, make_config(tmp_path, fake), FakeRunner()) as bot:
        alice = fake.add_user("alice")
        _, result, inter = await a_result(fake, bot, alice)
        await fake.wait_for(lambda: "done" in fake.message(inter.original.id).content)
        assert buttons(fake.message(inter.original.id)) == {}


async def test_two_cancels_at_once_end_in_one_cancelled(fake, tmp_path):
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    async with run_bot(fake, make_config(tmp_path, fake, moderator_roles=["mods"], allowed_guilds=[fake.guild_id]), runner) as bot:
        cancels: list[JobCancelled] = []
        bot.queue.subscribe(lambda ev: cancels.append(ev) if isinstance(ev, JobCancelled) else None)
        alice, mod = fake.add_user("alice"), fake.add_user("mod", roles=["mods"])
        inter = await fake.slash(alice, fake.channel, "imagine", {"prompt": "wanted by nobody", "steps": 2})
        job = await submitted(fake, bot, inter)
        status = inter.original
        await fake.wait_for(lambda: "cancel" in buttons(status))
        cid = buttons(status)["cancel"]["custom_id"]
        both = await asyncio.gather(fake.button_click(alice, status, cid), fake.button_click(mod, status, cid))
        for i in both:
            await i.wait_response()
        await fake.wait_for(lambda: bot.queue.get(job.id).state == "cancelled")
        await asyncio.sleep(0.3)
        assert len(cancels) == 1
        await fake.wait_for(lambda: any(ephemeral_text(fake, i) for i in both))
        refused = [ephemeral_text(fake, i) for i in both if ephemeral_text(fake, i)]
        assert len(refused) == 1 and "already cancelled" in refused[0]
        assert fake.message(status.id).content.count("cancelled") == 1
        hold.set()


async def test_ten_presses_in_a_second_start_one_job(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        job, result, _ = await a_result(fake, bot, alice)
        cid = buttons(result)["rerun"]["custom_id"]
        presses = []
        for _ in range(10):
            presses.append(await fake.button_click(bob, fake.message(result.id), cid))
            await asyncio.sleep(0.08)
        for i in presses:
            await i.wait_response()
            assert i.first_response_delay < 3.0
        await wait_results(fake, 2)
        await asyncio.sleep(0.3)
        assert len(bot.queue.jobs_of(str(bob.id))) == 1 and len(runner.calls) == 2


async def test_a_press_on_a_pruned_job_says_so(fake, tmp_path):
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    async with run_bot(fake, make_config(tmp_path, fake), FakeRunner()) as bot:
        job, result, _ = await a_result(fake, bot, alice)
    await asyncio.sleep(0.3)
    short = make_config(tmp_path, fake, queue={"keep_days": 1e-6})  # 0.09 s: pruned at start
    async with run_bot(fake, short, FakeRunner()) as bot2:
        assert bot2.queue.get(job.id) is None
        for action in ("rerun", "details"):
            text = await wait_ephemeral(fake, await press(fake, bob, result, action))
            assert "cleaned up" in text and job.id in text
        assert bot2.queue.pending() == []


async def test_a_press_without_the_role_or_in_another_channel_is_refused_like_a_command(fake, tmp_path):
    alice, carol = fake.add_user("alice", roles=["artists"]), fake.add_user("carol")
    async with run_bot(fake, make_config(tmp_path, fake, allowed_roles=["artists"], allowed_guilds=[fake.guild_id]), FakeRunner()) as bot:
        job, result, _ = await a_result(fake, bot, alice)
        for action in ("rerun", "details"):
            inter = await press(fake, carol, result, action)
            assert "roles" in await wait_ephemeral(fake, inter)
            assert not [m for m in inter.messages if not m.ephemeral]
        assert bot.queue.jobs_of(str(carol.id)) == []
    other = fake.add_channel("art")
    async with run_bot(fake, make_config(tmp_path, fake, allowed_channels=[other.id]), FakeRunner()) as bot:
        text = await wait_ephemeral(fake, await press(fake, alice, result, "rerun"))
        assert "channel" in text and bot.queue.jobs_of(str(alice.id))[0].id == job.id


def decoded_frames(data: bytes) -> list:
    with av.open(io.BytesIO(data)) as box:
        return [f.to_image() for f in box.decode(video=0)]


async def test_timelapse_button_posts_an_mp4_of_the_run(fake, tmp_path):
    async with run_bot(fake, make_config(tmp_path, fake), FakeRunner()) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        job, result, _ = await a_result(fake, bot, alice)
        inter = await press(fake, bob, result, "timelapse")
        [posted] = await inter.wait_followups(1, timeout=8)
        assert not posted.ephemeral and "🎞️" in posted.content
        [video] = posted.attachments
        assert video.filename.endswith(".mp4") and len(video.data) <= fake.attachment_size_limit
        frames = decoded_frames(video.data)
        held = 12 - 1  # at 12 fps the result stays 1 s at the end: the last frame and 11 repeats
        assert len(frames) == len(frame_files(bot.queue.frames_dir(job.id))) + held >= 2 + held
        last, shown = frames[-1].convert("RGB"), Image.open(io.BytesIO(result.attachments[0].data)).convert("RGB")
        assert last.size == shown.size == (64, 64)
        assert all(abs(a - b) <= 8 for a, b in zip(last.getpixel((32, 32)), shown.getpixel((32, 32)), strict=True))


async def test_timelapse_button_without_frames_says_so(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    cfg = cfg.model_copy(update={"timelapse": cfg.timelapse.model_copy(update={"max_frames": 0})})
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        alice = fake.add_user("alice")
        _, result, _ = await a_result(fake, bot, alice)
        text = await wait_ephemeral(fake, await press(fake, alice, result, "timelapse"))
        assert text == "⚠️ no frames kept for this job"


async def test_imagine_with_timelapse_posts_it_with_the_result(fake, tmp_path):
    async with run_bot(fake, make_config(tmp_path, fake), FakeRunner()) as bot:
        alice = fake.add_user("alice")
        _, result, _ = await a_result(fake, bot, alice, prompt="a blooming rose", timelapse=True)
        videos = await fake.wait_for(lambda: [m for m in fake.bot_messages(result.channel_id)
                                              if m.attachments and m.attachments[0].filename.endswith(".mp4")],
                                     timeout=8)
        assert videos[0].id > result.id and "🎞️" in videos[0].content
        assert len(decoded_frames(videos[0].attachments[0].data)) >= 2


def test_a_deliberate_press_after_the_debounce_acts_again():
    """The debounce is short and per person, job and button: another person, or the same one a moment
    later, is answered normally."""
    from bot.views import Debounce

    d = Debounce(window=0.05)
    assert d.first(1, "j", "rerun") and not d.first(1, "j", "rerun")
    assert d.first(2, "j", "rerun") and d.first(1, "j", "vary") and d.first(1, "k", "rerun")
    time.sleep(0.06)
    assert d.first(1, "j", "rerun")


async def test_a_press_counts_against_the_pressers_own_limit(fake, tmp_path):
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: req.prompt != "bob's own" or hold.is_set()
    async with run_bot(fake, make_config(tmp_path, fake, queue={"per_owner_pending": 1}), runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        job, result, _ = await a_result(fake, bot, alice)
        await submitted(fake, bot, await fake.slash(bob, fake.channel, "imagine", {"prompt": "bob's own", "steps": 2}))
        text = await wait_ephemeral(fake, await press(fake, bob, result, "rerun"))
        assert "limit 1" in text and len(bot.queue.jobs_of(str(bob.id))) == 1
        await press(fake, alice, result, "rerun")  # alice's limit is her own
        await fake.wait_for(lambda: len(bot.queue.jobs_of(str(alice.id))) == 2)
        hold.set()


async def test_details_of_an_edit_names_the_upload_but_not_where_the_bot_keeps_it(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        upload = await fake.user_message(alice, fake.channel, "",
                                         attachments=[("cat.png", png((32, 32), (10, 120, 200)), "image/png")])
        await fake.user_message(alice, fake.channel, "a cat made of fire", reply_to=upload)
        [result] = await wait_results(fake)
        await fake.wait_for(lambda: bot.queue.find(result_message_id=result.id))
        job = await job_of(fake, bot, result)
        assert job.request.init_image and str(cfg.discord.data_path) in job.request.init_image
        text = await wait_ephemeral(fake, await press(fake, bob, result, "details"))
        assert "a cat made of fire" in text and os.path.basename(job.request.init_image) in text
        assert str(cfg.discord.data_path) not in text and str(tmp_path) not in text


async def test_an_edit_form_opened_before_a_restart_is_answered_after_it(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        job, result, _ = await a_result(fake, bot, alice)
        inter = await press(fake, bob, result, "edit")  # bob is still typing when the bot restarts
    form = inter.modal
    fields = [row["components"][0]["custom_id"] for row in form["components"]]
    runner = FakeRunner()
    async with run_bot(fake, cfg, runner) as bot2:
        submit = await fake.modal_submit(bob, result.channel_id, form["custom_id"],
                                         {fields[0]: "a fur coat", fields[1]: "the barn door"}, message=result)
        assert (await submit.wait_response()).type == 5
        second = (await wait_results(fake, 2))[1]
        edit = await job_of(fake, bot2, second)
        assert (edit.request.kind, edit.request.prompt, edit.request.region) == ("edit", "a fur coat", "the barn door")
        assert edit.request.parent == job.id and edit.owner == str(bob.id)


async def test_an_edit_form_for_a_deleted_picture_says_so(fake, tmp_path):
    async with run_bot(fake, make_config(tmp_path, fake), FakeRunner()) as bot:
        alice = fake.add_user("alice")
        _job, result, _ = await a_result(fake, bot, alice)
        inter = await press(fake, alice, result, "edit")
        await fake.delete_message(result.id)
        prompt_id = inter.modal["components"][0]["components"][0]["custom_id"]
        submit = await fake.modal_submit(alice, result.channel_id, inter.modal["custom_id"], {prompt_id: "a fur coat"})
        assert "that message is gone" in await wait_ephemeral(fake, submit)
        assert len(bot.queue.jobs_of(str(alice.id))) == 1
