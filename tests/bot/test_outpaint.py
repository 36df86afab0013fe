"""Zoom out and pan under a result, pressed through the fake Discord, before and after a restart."""

from __future__ import annotations

import io

from PIL import Image

from tests.bot.conftest import FakeRunner, job_of, make_config, run_bot, wait_ephemeral, wait_results
from tests.bot.test_buttons import RESULT_BUTTONS, a_result, buttons, press


async def test_zoom_out_and_pan_paint_a_bigger_canvas_around_the_result_even_after_a_restart(fake, tmp_path):
    cfg = make_config(tmp_path, fake, limits={"max_width": 128, "max_height": 128})
    alice, bob = fake.add_user("alice"), fake.add_user("bob")
    async with run_bot(fake, cfg, FakeRunner()) as bot:
        job, result, _ = await a_result(fake, bot, alice)  # 64x64
        rows = [[c["custom_id"].split(":")[1] for c in row["components"]] for row in result.components]
        assert rows == [RESULT_BUTTONS[:5], ["upscale", "zoomout15", "zoomout2"], ["panleft", "panright", "panup", "pandown"]]
        shown = buttons(result)
        assert (shown["zoomout15"]["label"], shown["zoomout2"]["label"]) == ("Zoom out 1.5x", "Zoom out 2x")
        assert [shown[a]["emoji"]["name"] for a in rows[2]] == ["⬅️", "➡️", "⬆️", "⬇️"]

        await press(fake, bob, result, "zoomout2")
        zoomed_post = (await wait_results(fake, 2))[1]
        zoomed = await job_of(fake, bot, zoomed_post)
        r = zoomed.request
        assert (r.kind, r.prompt, r.width, r.height, r.parent) == ("outpaint", "a red barn", 128, 128, job.id)
        assert r.outpaint is not None and (r.outpaint.left, r.outpaint.right, r.outpaint.up, r.outpaint.down,
                                           r.outpaint.seam) == (32, 32, 32, 32, cfg.editing.outpaint_seam)
        assert r.init_image == bot.queue.get(job.id).result_path  # the result itself, from the results folder
        assert zoomed.owner == str(bob.id) and zoomed.origin["outpaint_of"] == job.id
        assert Image.open(io.BytesIO(zoomed_post.attachments[0].data)).size == (128, 128)
        assert list(buttons(zoomed_post)) == RESULT_BUTTONS  # a zoomed-out picture can be zoomed out again...

        text = await wait_ephemeral(fake, await press(fake, bob, zoomed_post, "zoomout2"))  # ... within the limits
        assert text == "⚠️ zoom out 2x would make the picture 256x256, over the limit (128x128, 409600 pixels in all)"
        assert len(bot.queue.jobs_of(str(bob.id))) == 1
        await press(fake, bob, zoomed_post, "vary")  # its variation is a plain variation of the bigger picture
        varied = (await job_of(fake, bot, (await wait_results(fake, 3))[2])).request
        assert (varied.kind, varied.outpaint, varied.width, varied.init_image) == ("vary", None, 128,
                                                                                   bot.queue.get(zoomed.id).result_path)

    async with run_bot(fake, cfg, FakeRunner()) as bot2:  # the job store and the results folder keep the buttons alive
        await press(fake, bob, result, "panleft")
        panned = (await job_of(fake, bot2, (await wait_results(fake, 4))[3])).request
        assert (panned.kind, panned.width, panned.height, panned.parent) == ("outpaint", 96, 64, job.id)
        assert panned.outpaint is not None and (panned.outpaint.left, panned.outpaint.right) == (32, 0)
        assert (panned.outpaint.up, panned.outpaint.down) == (0, 0)
