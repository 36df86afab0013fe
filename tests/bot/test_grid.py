"""Grids in Discord: /imagine posts four candidates as one job; U upscales one, V varies one, Rerun paints
a new grid; an upscale over the limits is refused in one line; the buttons work after a restart (issue 21)."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from bot.config import BotConfig
from engine.media.imageio import read_metadata
from tests.bot.conftest import (
    FakeRunner,
    job_of,
    make_config,
    run_bot,
    submitted,
    wait_ephemeral,
    wait_results,
)
from tests.bot.test_buttons import RESULT_BUTTONS, buttons, press

GRID_BUTTONS = ["u1", "u2", "u3", "u4", "v1", "v2", "v3", "v4", "rerun", "timelapse", "details"]


def with_upscale_steps(cfg: BotConfig, steps: int) -> BotConfig:
    return cfg.model_copy(update={"editing": cfg.editing.model_copy(update={"upscale_steps": steps})})


async def a_grid(fake, bot, user, prompt: str, **options):
    inter = await fake.slash(user, fake.channel, "imagine", {"prompt": prompt, "seed": 7, "steps": 2, **options})
    job = await submitted(fake, bot, inter)
    result = await fake.wait_for(lambda: [r for r in (m for m in fake.bot_messages() if m.attachments)
                                          if prompt in r.content and "grid of" in r.content])
    await fake.wait_for(lambda: bot.queue.find(result_message_id=result[0].id))
    return job, result[0]


async def test_imagine_posts_a_grid_whose_buttons_upscale_vary_and_rerun_its_candidates(fake, tmp_path):
    cfg = with_upscale_steps(make_config(tmp_path, fake, grid=4), 2)
    runner = FakeRunner()
    async with run_bot(fake, cfg, runner) as bot:
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        job, grid = await a_grid(fake, bot, alice, "a lighthouse at dusk")
        assert job.request.grid == 4 and len(runner.calls) == 1  # one job for the four
        assert "grid of 4 · seed `7`…`10`" in grid.content and "64x64 each" in grid.content
        assert Image.open(io.BytesIO(grid.attachments[0].data)).size == (128, 128)  # 2x2
        assert list(buttons(grid)) == GRID_BUTTONS
        assert [r["components"][0]["label"] for r in grid.components] == ["U1", "V1", "Rerun"]  # a row each
        files = [Path(cfg.queue.results_dir) / f"{job.id}-{i}.png" for i in range(1, 5)]
        assert [read_metadata(f)["request"]["seed"] for f in files] == [7, 8, 9, 10]

        await press(fake, bob, grid, "u2")
        upscaled = await job_of(fake, bot, (await wait_results(fake, 2))[1])
        r = upscaled.request
        assert (r.kind, r.width, r.height, r.steps, r.seed, r.grid) == ("upscale", 128, 128, 2, 8, 1)
        assert r.init_image == str(files[1]) and r.parent == f"{job.id}-2" and upscaled.owner == str(bob.id)
        assert upscaled.origin["upscale_of"] == job.id and upscaled.origin["candidate"] == 2

        await press(fake, bob, grid, "v3")
        third = (await wait_results(fake, 3))[2]
        varied = (await job_of(fake, bot, third)).request
        assert (varied.kind, varied.init_image, varied.parent, varied.grid) == ("vary", str(files[2]),
                                                                                 f"{job.id}-3", 1)
        assert varied.seed != 9 and (varied.width, varied.height) == (64, 64)
        assert list(buttons(third)) == RESULT_BUTTONS  # posted on its own, with a single picture's buttons

        await press(fake, alice, grid, "rerun")
        again = (await fake.wait_for(lambda: [j for j in bot.queue.jobs_of(str(alice.id))
                                              if j.id != job.id and j.state == "finished"]))[0]
        assert again.request.grid == 4 and again.request.seed != 7 and again.request.parent == job.id


async def test_count_asks_for_another_grid_and_an_upscale_over_the_limits_is_refused_after_a_restart(
        fake, tmp_path):
    cfg = make_config(tmp_path, fake, grid=4, limits={"max_width": 96, "max_height": 96})
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        job, grid = await a_grid(fake, bot, alice, "two moons", count=2)
        assert job.request.grid == 2
        assert list(buttons(grid)) == ["u1", "u2", "v1", "v2", "rerun", "timelapse", "details"]
        inter = await fake.slash(alice, fake.channel, "imagine", {"prompt": "one moon", "steps": 2, "count": 1})
        assert (await submitted(fake, bot, inter)).request.grid == 1
        single = (await wait_results(fake, 2))[1]
        assert list(buttons(single)) == RESULT_BUTTONS
    async with run_bot(fake, cfg, FakeRunner()) as bot2:  # a press after a restart finds the job in the store
        for message, action in ((grid, "u1"), (single, "upscale")):
            refusal = await wait_ephemeral(fake, await press(fake, bob, message, action))
            assert refusal == ("⚠️ upscaling 64x64 by 2 gives 128x128, over the limit (96x96, 409600 pixels in all); "
                               "the largest scale for this 64x64 picture is 1.5")
        assert bot2.queue.jobs_of(str(bob.id)) == []
        await press(fake, bob, grid, "v2")
        varied = await job_of(fake, bot2, (await wait_results(fake, 3))[2])
        assert varied.request.parent == f"{job.id}-2" and varied.request.kind == "vary"
