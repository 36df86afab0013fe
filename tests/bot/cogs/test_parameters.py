"""Parameters, sweeps and blends typed in Discord: /imagine, /blend and replies, through the real
discord.py client and the fake Discord, with the fake runner (no painting)."""

from __future__ import annotations

import asyncio

import pytest

from tests.bot.conftest import (
    FakeRunner,
    job_of,
    make_config,
    png,
    run_bot,
    submitted,
    wait_ephemeral,
    wait_results,
)
from tests.bot.test_buttons import press

KNOWN = "parameters: --ar W:H, --seed N, --steps N, --no WORDS"


async def test_parameters_in_the_prompt_make_the_request_and_details_shows_them(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        await fake.slash(alice, fake.channel, "imagine",
                         {"prompt": "a lighthouse at dusk --ar 16:9 --no people, text --seed 7", "steps": 2})
        [result] = await wait_results(fake)
        [req] = runner.calls
        assert req.prompt == "a lighthouse at dusk" and req.seed == 7
        assert req.negative == ("people", "text")
        assert req.parameters == "--ar 16:9 --no people, text --seed 7"
        assert abs(req.width / req.height - 16 / 9) < 0.15 and req.width % 16 == req.height % 16 == 0
        assert abs(req.width * req.height - 64 * 64) <= 64 * 16  # the configured pixel count, near enough
        assert fake.thread_for(fake.message((await job_of(fake, bot, result)).origin["status_message_id"])
                               ).name == "a lighthouse at dusk"
        text = await wait_ephemeral(fake, await press(fake, bob, result, "details"))
        assert "prompt: a lighthouse at dusk" in text and "`--ar 16:9 --no people, text --seed 7`" in text
        assert "keeping out: people, text" in text


async def test_options_win_over_the_parameters_of_the_same_name(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner):
        alice = fake.add_user("alice")
        await fake.slash(alice, fake.channel, "imagine", {"prompt": "a barn --seed 7 --steps 6 --ar 16:9",
                                                          "seed": 9, "steps": 2, "size": "48x32"})
        await wait_results(fake)
        [req] = runner.calls
        assert (req.seed, req.steps, req.width, req.height) == (9, 2, 48, 32)
        assert req.prompt == "a barn" and req.parameters == "--seed 7 --steps 6 --ar 16:9"


async def test_model_and_clip_parameters_pick_among_the_servers_choices(fake, tmp_path):
    cfg = make_config(tmp_path, fake)
    models = {**cfg.models.model_dump(), "vqgan_choices": ["wikiart_16384"], "clip_choices": ["ViT-B-16/openai"]}
    cfg = cfg.model_validate({**cfg.model_dump(), "models": models})
    runner = FakeRunner()
    async with run_bot(fake, cfg, runner):
        alice = fake.add_user("alice")
        await fake.slash(alice, fake.channel, "imagine",
                         {"prompt": "a cat --model wikiart_16384 --clip ViT-B-16/openai", "steps": 2})
        await wait_results(fake)
        [req] = runner.calls
        assert req.models.vqgan == "wikiart_16384" and [c.choice() for c in req.models.clips()] == ["ViT-B-16/openai"]
        inter = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a cat --clip RN101/openai"})
        assert "unknown CLIP model 'RN101/openai'" in await wait_ephemeral(fake, inter)


@pytest.mark.parametrize(("prompt", "expect", "lists_them"), [
    ("a cat --chaos 50", "unknown parameter '--chaos'", True),
    ("a cat --ar 16x9", "--ar '16x9'", True),
    ("a cat --seed 1 --seed 2", "--seed is given twice", True),
    ("a {red, blue car", "is never closed", False),
    ("a cat --style noir", "no style named 'noir'", False),
    ("a cat --iw 0.5", "--iw weighs the image prompts, and there are none", False),
])
async def test_a_bad_parameter_or_brace_is_one_line_and_nothing_is_queued(fake, tmp_path, prompt, expect,
                                                                           lists_them):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        inter = await fake.slash(fake.add_user("alice"), fake.channel, "imagine", {"prompt": prompt})
        text = await wait_ephemeral(fake, inter)
        assert expect in text and len(text.splitlines()) == 1
        assert (KNOWN in text) == lists_them
        assert bot.queue.pending() == [] and runner.calls == []


async def test_a_sweep_of_three_makes_three_jobs_in_order(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice = fake.add_user("alice")
        inter = await fake.slash(alice, fake.channel, "imagine",
                                 {"prompt": "a {red, blue, golden} car --seed 5", "steps": 2})
        await wait_results(fake, 3)
        jobs = sorted(bot.queue.jobs_of(str(alice.id)), key=lambda j: j.created_at)
        assert [j.request.prompt for j in jobs] == ["a red car", "a blue car", "a golden car"]
        assert {j.request.seed for j in jobs} == {5}  # a sweep compares choices under one seed
        statuses = [j.origin["status_message_id"] for j in jobs]
        assert statuses[0] == inter.original.id and [m.id for m in inter.followups[-2:]] == statuses[1:]
        assert "job 2 of 3 from one prompt" in fake.message(statuses[1]).content


async def test_repeat_makes_jobs_with_consecutive_seeds(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner):
        await fake.slash(fake.add_user("alice"), fake.channel, "imagine",
                         {"prompt": "a moth --repeat 2", "seed": 40, "steps": 2})
        await wait_results(fake, 2)
        assert sorted(r.seed for r in runner.calls) == [40, 41]


async def test_a_sweep_over_the_pending_limit_is_refused_whole(fake, tmp_path):
    runner = FakeRunner()
    hold = asyncio.Event()
    runner.gate = lambda req: hold.is_set()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:  # per_owner_pending = 3
        alice = fake.add_user("alice")
        await submitted(fake, bot, await fake.slash(alice, fake.channel, "imagine", {"prompt": "first", "steps": 2}))
        inter = await fake.slash(alice, fake.channel, "imagine", {"prompt": "a {red, blue, golden} car"})
        text = await wait_ephemeral(fake, inter)
        assert "That makes 3 jobs and you have 1 waiting (limit 3); nothing was queued" in text
        assert [j.request.prompt for j in bot.queue.pending()] == ["first"]
        hold.set()


async def test_a_style_from_the_hook_is_appended_to_the_prompt(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice = fake.add_user("alice")
        asked = []

        async def styles(user: int, guild: int | None, name: str) -> str | None:
            asked.append((user, guild, name))
            return "oil painting, dramatic light" if name == "noir" else None

        bot.styles = styles
        await fake.slash(alice, fake.channel, "imagine", {"prompt": "a cat --style noir", "steps": 2})
        await wait_results(fake)
        assert runner.calls[0].prompt == "a cat, oil painting, dramatic light"
        assert runner.calls[0].parameters == "--style noir" and asked == [(alice.id, fake.guild.id, "noir")]


async def test_blend_of_two_images_queues_one_job_with_two_image_prompts(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner):
        alice = fake.add_user("alice")
        inter = await fake.slash(alice, fake.channel, "blend", {"weights": "1, 2", "aspect": "wide"}, attachments={
            "image1": ("a.png", png((32, 32), (200, 0, 0)), "image/png"),
            "image2": ("b.png", png((32, 32), (0, 0, 200)), "image/png")})
        assert (await inter.wait_response()).type == 5
        [result] = await wait_results(fake)
        [req] = runner.calls
        assert req.prompt == "" and [ip.weight for ip in req.image_prompts] == [1.0, 2.0]
        assert req.width > req.height and all(ip.path.endswith(".png") for ip in req.image_prompts)
        assert "**2 images blended**" in result.content


async def test_blend_with_words_and_parameters_and_a_wrong_weight_count(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner) as bot:
        alice = fake.add_user("alice")
        two = {"image1": ("a.png", png((32, 32), (200, 0, 0)), "image/png"),
               "image2": ("b.png", png((32, 32), (0, 0, 200)), "image/png")}
        inter = await fake.slash(alice, fake.channel, "blend", {"weights": "1,2,3"}, attachments=two)
        assert "one number per picture (2)" in await wait_ephemeral(fake, inter)
        await fake.slash(alice, fake.channel, "blend", {"prompt": "a storm --iw 0.5 --seed 3 --steps 2"},
                         attachments=two)
        await wait_results(fake)
        [req] = runner.calls
        assert req.prompt == "a storm" and req.seed == 3 and [ip.weight for ip in req.image_prompts] == [0.5, 0.5]
        assert len(bot.queue.jobs_of(str(alice.id))) == 1


async def test_a_reply_edit_reads_its_parameters(fake, tmp_path):
    runner = FakeRunner()
    async with run_bot(fake, make_config(tmp_path, fake), runner):
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        upload = await fake.user_message(alice, fake.channel, "look",
                                         attachments=[("photo.png", png((64, 32)), "image/png")])
        await fake.user_message(bob, fake.channel, "jacket -> a fur coat --seed 11 --no buttons", reply_to=upload)
        await wait_results(fake)
        [req] = runner.calls
        assert (req.kind, req.region, req.prompt, req.seed, req.negative) == (
            "edit", "jacket", "a fur coat", 11, ("buttons",))
