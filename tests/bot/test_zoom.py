"""/zoom in Discord: an endless-zoom video made by the real engine on the tiny models, queued like any job."""

from __future__ import annotations

import io
import time

import av
import pytest

from engine.workers.runner import EngineRunner
from tests.bot.conftest import (
    ephemeral_text,
    job_of,
    make_config,
    progress_posts,
    results,
    run_bot,
    settle,
    submitted,
    wait_results,
)


@pytest.fixture
def cfg(tiny_cfg, fake, tmp_path):
    return make_config(tmp_path, fake, tiny_cfg, limits={"max_frames": 6, "max_video_steps": 12})


def decoded(mp4: bytes) -> list[tuple[int, int]]:
    """The size of every frame PyAV decodes from the video."""
    with av.open(io.BytesIO(mp4)) as box:
        return [(f.width, f.height) for f in box.decode(video=0)]


def videos(fake):
    return [m for m in fake.bot_messages() if m.attachments and m.attachments[0].filename.endswith(".mp4")]


async def test_zoom_posts_its_frames_then_an_mp4_of_all_of_them(fake, cfg):
    async with run_bot(fake, cfg):
        alice = fake.add_user("alice")
        inter = await fake.slash(alice, fake.channel, "zoom", {"prompt": "a fractal city", "frames": 4,
                                                                "steps_per_frame": 1, "seed": 7})
        await inter.wait_response()
        [result] = await wait_results(fake, timeout=60)
        [video] = await fake.wait_for(lambda: videos(fake), timeout=30)
        thread = fake.thread_for(inter.original).id
        assert result.channel_id == thread and video.channel_id == thread
        [progress] = progress_posts(fake)  # one message, edited as each frame comes
        assert "frame 4/4" in progress.content
        assert decoded(video.attachments[0].data) == [(32, 32)] * 4
        assert "4 frames x 1 steps" in result.content


def frame_times(mp4: bytes) -> list[float]:
    """When each decoded frame is shown, in seconds."""
    with av.open(io.BytesIO(mp4)) as box:
        return [float(f.time) for f in box.decode(video=0)]


async def test_the_timelapse_button_on_a_zoom_plays_it_at_the_zoom_s_own_fps(fake, cfg):
    async with run_bot(fake, cfg):
        alice, bob = fake.add_user("alice"), fake.add_user("bob")
        inter = await fake.slash(alice, fake.channel, "zoom", {"prompt": "a fractal city", "frames": 4,
                                                                "steps_per_frame": 1, "seed": 7})
        await inter.wait_response()
        [result] = await wait_results(fake, timeout=60)
        [video] = await fake.wait_for(lambda: videos(fake), timeout=30)
        button = next(c["custom_id"] for row in fake.message(result.id).components for c in row["components"]
                      if c["custom_id"].startswith("vqgan:timelapse:"))
        press = await fake.button_click(bob, fake.message(result.id), button)
        [posted] = await press.wait_followups(1, timeout=30)
        again = posted.attachments[0].data
        assert frame_times(again) == frame_times(video.attachments[0].data) == [k / 24 for k in range(4)]
        assert decoded(again) == [(32, 32)] * 4  # every frame is the video: nothing held at the end


@pytest.mark.parametrize(("options", "says"), [
    ({"frames": 7, "steps_per_frame": 1}, "frames must be at most 6"),
    ({"frames": 5, "steps_per_frame": 3}, "the limit is 12"),
    ({"prompt": "a {long, short} tunnel", "frames": 2}, "a zoom video is one job, and this prompt makes 2"),
    ({"prompt": "a tunnel --steps 3", "frames": 2}, "--steps: a zoom paints steps_per_frame steps"),
])
async def test_an_over_limit_zoom_is_refused_before_it_is_queued(fake, cfg, options, says):
    async with run_bot(fake, cfg) as bot:
        bob = fake.add_user("bob")
        inter = await fake.slash(bob, fake.channel, "zoom", {"prompt": "a tunnel", **options})
        await inter.wait_response()
        await settle()
        assert says in ephemeral_text(fake, inter)
        assert bot.queue.pending() == []
        assert not videos(fake)


class SlowRunner(EngineRunner):
    """The real engine, a little slower per step, so that a restart can come between two frames."""

    polls = 0  # steps asked whether to stop

    def zoom(self, request, frames_dir, on_frame=None, should_stop=None):
        def slow_stop() -> bool:
            self.polls += 1
            time.sleep(0.15)
            return should_stop() if should_stop else False

        return super().zoom(request, frames_dir, on_frame, slow_stop)


async def test_a_zoom_interrupted_by_a_restart_goes_on_from_its_frames(fake, cfg):
    alice = fake.add_user("alice")
    async with run_bot(fake, cfg, runner=SlowRunner(cfg)) as bot:
        inter = await fake.slash(alice, fake.channel, "zoom", {"prompt": "a fractal city", "frames": 4,
                                                                "steps_per_frame": 3, "seed": 3})
        await inter.wait_response()
        job = await submitted(fake, bot, inter)
        folder = await fake.wait_for(lambda: bot.queue.frames_dir(job.id), timeout=60)
        first = folder / "00001.png"
        kept = (first.read_bytes(), first.stat().st_mtime_ns)
    made_before = sorted(p.name for p in folder.glob("*.png"))
    assert 1 <= len(made_before) < 4 and not results(fake)  # stopped mid-video, kept for the next start

    async with run_bot(fake, cfg, runner=SlowRunner(cfg)) as bot:
        [video] = await fake.wait_for(lambda: videos(fake), timeout=60)
        assert bot.queue.get(job.id).state == "finished"
    assert decoded(video.attachments[0].data) == [(32, 32)] * 4
    assert (first.read_bytes(), first.stat().st_mtime_ns) == kept  # not painted again


async def test_a_variation_of_a_zoom_is_a_still_picture_of_its_last_frame(fake, cfg):
    async with run_bot(fake, cfg) as bot:
        alice = fake.add_user("alice")
        inter = await fake.slash(alice, fake.channel, "zoom", {"prompt": "a fractal city", "frames": 3,
                                                                "steps_per_frame": 1})
        await inter.wait_response()
        [result] = await wait_results(fake, timeout=60)
        await fake.react(alice, result, cfg.discord.vary_emoji)
        variation = (await wait_results(fake, 2, timeout=60))[1]
        job = await job_of(fake, bot, variation)
        assert job.request.kind == "vary" and job.request.zoom is None


async def test_cancelling_a_zoom_stops_it_within_a_frame_and_posts_no_video(fake, cfg):
    runner = SlowRunner(cfg)
    async with run_bot(fake, cfg, runner=runner) as bot:
        alice = fake.add_user("alice")
        inter = await fake.slash(alice, fake.channel, "zoom", {"prompt": "a tunnel", "frames": 4,
                                                                "steps_per_frame": 3})
        await inter.wait_response()
        job = await submitted(fake, bot, inter)
        await fake.wait_for(lambda: bot.queue.frames_dir(job.id), timeout=60)
        await bot.queue.cancel(job.id, by=str(alice.id))
        polled = runner.polls
        await settle(1.0)
        assert runner.polls - polled <= 1  # the step under way was the last: no frame painted on
        assert bot.queue.get(job.id).state == "cancelled"
        assert not videos(fake) and not results(fake)
