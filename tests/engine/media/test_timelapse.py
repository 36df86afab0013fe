"""Watching a picture form: timelapses from the command line, and the frames every job keeps.

A user asks ``imagine ... --timelapse run.mp4`` (or .webp/.gif, also on edit and vary), or makes one later
with ``python -m engine timelapse FRAMES_DIR -o out.mp4`` from a job's stored frames or a --progress-dir;
the queue keeps each job's frames beside its result, bounded and pruned with it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
import weakref
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.config import Config, QueueConfig, TimelapseConfig
from engine.media import timelapse
from engine.media.frames import frame_name
from engine.media.timelapse import frame_files, make_timelapse
from engine.queue import JobQueue
from engine.spec.request import Request
from tests.fakes import FakeProgress, FakeResult, FakeRunner

ROOT = Path(__file__).resolve().parents[3]
HELD = 12 - 1  # at 12 fps the result is shown 1 s at the end: the last frame and 11 repeats of it


def rgb(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def mp4_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as box:
        stream = box.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        return [f.to_ndarray(format="rgb24").astype(int) for f in box.decode(stream)]


def through_yuv420p(img: np.ndarray) -> np.ndarray:
    """What any yuv420p video can show of an RGB picture (half-resolution colour): the codec's floor."""
    frame = av.VideoFrame.from_ndarray(img.astype(np.uint8), format="rgb24").reformat(format="yuv420p")
    return frame.to_ndarray(format="rgb24").astype(int)


def gif_or_webp_frames(path: Path) -> list[np.ndarray]:
    return [frame for frame, _ in timed_frames(path)]


def timed_frames(path: Path) -> list[tuple[np.ndarray, int]]:
    """Each frame and how long it shows (ms); Pillow and libwebp merge frames that do not change."""
    img = Image.open(path)
    out = []
    for i in range(img.n_frames):
        img.seek(i)
        out.append((np.asarray(img.convert("RGB")).astype(int), int(img.info["duration"])))
    return out


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# -- the command line ----------------------------------------------------------------------


def test_imagine_writes_an_mp4_that_ends_on_the_result(tiny_config_path, tmp_path, capsys):
    out, video = tmp_path / "run.png", tmp_path / "run.mp4"
    assert main(["imagine", "a lighthouse at dusk", "-o", str(out), "--steps", "6", "--seed", "4",
                 "--timelapse", str(video), "--config", str(tiny_config_path)]) == 0
    said = capsys.readouterr().out
    assert f"{video} (timelapse, 6 frames, 32x32)" in said  # step 1 (the first) ... step 6 (the result)
    frames = mp4_frames(video)
    assert len(frames) == 6 + HELD
    result = rgb(out)
    floor = through_yuv420p(result)
    assert np.abs(frames[-1] - floor).mean() < 8  # the result, within H.264's error
    assert np.abs(frames[-1] - floor).mean() < np.abs(frames[0] - floor).mean()


def test_webp_ends_on_the_exact_result_and_edit_and_vary_take_timelapses_too(tiny_config_path, tmp_path):
    out, anim = tmp_path / "o.png", tmp_path / "o.webp"
    assert main(["imagine", "stars", "-o", str(out), "--steps", "4", "--seed", "3", "--timelapse", str(anim),
                 "--config", str(tiny_config_path)]) == 0
    shown = timed_frames(anim)  # a fixed seed: with some seeds the tiny models paint 4 equal frames, one still WebP
    assert sum(ms for _, ms in shown) == 3 * 83 + 1000  # four frames at 12 a second, the last held 1 s
    assert np.array_equal(shown[-1][0], rgb(out))  # lossless: the same pixels

    edited, gif = tmp_path / "edited.png", tmp_path / "edited.gif"
    assert main(["edit", str(out), "a moon", "-o", str(edited), "--steps", "3", "--timelapse", str(gif),
                 "--timelapse-fps", "5", "--config", str(tiny_config_path)]) == 0
    shown = timed_frames(gif)
    assert sum(ms for _, ms in shown) == 2 * 200 + 1000  # three frames at 5 a second, the last held 1 s
    assert np.abs(shown[-1][0] - rgb(edited)).mean() < 12  # 256 colours

    child, video = tmp_path / "child.png", tmp_path / "child.mp4"
    assert main(["vary", str(out), "-o", str(child), "--timelapse", str(video),
                 "--config", str(tiny_config_path)]) == 0
    assert len(mp4_frames(video)) >= 2 and child.exists()


def test_a_one_step_job_still_gets_a_two_frame_timelapse(tiny_config_path, tmp_path):
    out, video = tmp_path / "o.png", tmp_path / "o.mp4"
    assert main(["imagine", "a dot", "-o", str(out), "--steps", "1", "--timelapse", str(video),
                 "--config", str(tiny_config_path)]) == 0
    frames = mp4_frames(video)
    assert len(frames) == 2 + HELD
    assert np.abs(frames[-1] - through_yuv420p(rgb(out))).mean() < 8


def test_timelapse_of_a_progress_dir_in_step_order(tiny_config_path, tmp_path, capsys):
    prog = tmp_path / "progress"
    assert main(["imagine", "a river", "-o", str(tmp_path / "o.png"), "--steps", "4", "--save-every", "1",
                 "--progress-dir", str(prog), "--config", str(tiny_config_path)]) == 0
    gif = tmp_path / "river.webp"
    assert main(["timelapse", str(prog), "-o", str(gif), "--fps", "2"]) == 0
    assert f"{gif} (timelapse, 4 frames, 32x32)" in capsys.readouterr().out
    played = [frame for frame, ms in timed_frames(gif) for _ in range(ms // 500)]  # 2 a second
    steps = frame_files(prog)
    assert all(np.array_equal(a, rgb(p)) for a, p in zip(played, [*steps, steps[-1]], strict=True))  # held 1 s


@pytest.mark.parametrize("make, words", [
    (lambda d: d / "nope", "no such folder"),
    (lambda d: (d / "empty").mkdir() or d / "empty", "no frame PNGs"),
])
def test_a_missing_or_empty_folder_is_one_line_and_exit_2(tmp_path, capsys, make, words):
    folder = make(tmp_path)
    assert main(["timelapse", str(folder), "-o", str(tmp_path / "t.mp4")]) == 2
    assert words in one_line(capsys.readouterr().err)
    assert not (tmp_path / "t.mp4").exists()


def test_bad_timelapse_options_are_refused_before_painting(tiny_config_path, tmp_path, capsys):
    out = tmp_path / "o.png"
    for extra, words in ((["--timelapse", str(tmp_path / "t.avi")], ".mp4, .webp or .gif"),
                         (["--timelapse", str(tmp_path / "t.mp4"), "--timelapse-fps", "0"], "from 1 to 60")):
        assert main(["imagine", "x", "-o", str(out), *extra, "--config", str(tiny_config_path)]) == 2
        assert words in one_line(capsys.readouterr().err)
        assert not out.exists()


def test_making_a_timelapse_needs_no_torch(tmp_path):
    """The bot makes timelapses too, and never imports torch."""
    for i in range(3):
        Image.new("RGB", (16, 16), (80 * i, 0, 0)).save(tmp_path / f"{i:05d}.png")
    code = ("import sys\nfrom engine.cli import main\n"
            f"code = main(['timelapse', {str(tmp_path)!r}, '-o', {str(tmp_path / 't.mp4')!r}])\n"
            "print(code, 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert proc.stdout.strip().splitlines()[-1] == "0 False", proc.stderr


# -- fitting a size limit ------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".mp4", ".webp", ".gif"])
def test_an_oversized_run_is_made_to_fit_and_says_so(tmp_path, suffix):
    rng = np.random.default_rng(0)
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(40):  # noise: the hardest thing to compress
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    files = frame_files(folder)
    full = make_timelapse(files, tmp_path / f"full{suffix}")
    assert full.note is None and full.frames == 40
    limit = full.path.stat().st_size // 6
    small = make_timelapse(files, tmp_path / f"small{suffix}", max_bytes=limit)
    assert small.path.stat().st_size <= limit
    assert small.note and small.note.startswith("shortened to fit")
    if suffix == ".mp4":
        assert len(mp4_frames(small.path)) == small.frames + HELD
        assert small.size[0] % 2 == 0 and small.size[1] % 2 == 0
    else:
        assert len(gif_or_webp_frames(small.path)) == small.frames
    assert small.frames >= 2 and (small.frames < 40 or small.size < (96, 96) or "quality" in small.note
                                  or "lossy" in small.note or "colours" in small.note)


@pytest.mark.parametrize("suffix", [".mp4", ".webp", ".gif"])
def test_a_timelapse_holds_its_result_about_a_second_at_the_end(tmp_path, capsys, suffix):
    """Issue #13: viewers see what the picture became before the loop starts again."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(5):
        Image.new("RGB", (32, 32), (50 * i, 255 - 50 * i, 0)).save(folder / f"{i:06d}.png")
    out = tmp_path / f"t{suffix}"
    assert main(["timelapse", str(folder), "-o", str(out), "--fps", "10"]) == 0
    assert f"{out} (timelapse, 5 frames, 32x32)" in capsys.readouterr().out
    last = rgb(folder / "000004.png")
    if suffix == ".mp4":  # a constant frame rate: the result is repeated for 1 s
        with av.open(str(out)) as box:
            shown = [(f.to_ndarray(format="rgb24").astype(int), float(f.time)) for f in box.decode(video=0)]
            assert box.streams.video[0].average_rate == 10
        assert len(shown) == 5 + 9 and [t for _, t in shown] == pytest.approx([k / 10 for k in range(14)])
        assert all(np.abs(frame - last).mean() < 8 for frame, _ in shown[4:])
        assert np.abs(shown[3][0] - last).mean() > 20  # the frame before it is another picture
    else:  # the last frame lasts 1 s
        shown_ms = timed_frames(out)
        assert [ms for _, ms in shown_ms] == [100, 100, 100, 100, 1000]
        assert np.abs(shown_ms[-1][0] - last).mean() < 8


def test_odd_sizes_become_even_for_h264(tmp_path):
    for i in range(2):
        Image.new("RGB", (33, 19), (0, 100 * i, 0)).save(tmp_path / f"{i}.png")
    made = make_timelapse(frame_files(tmp_path), tmp_path / "o.mp4")
    assert made.size == (32, 18) and mp4_frames(made.path)[0].shape == (18, 32, 3)


# -- long runs ------------------------------------------------------------------------------


def noise_frames(folder: Path, count: int, size: int = 16) -> list[Path]:
    folder.mkdir()
    rng = np.random.default_rng(5)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"{i:06d}.png")
    return frame_files(folder)


def test_a_long_gif_is_streamed_a_frame_at_a_time(tmp_path, monkeypatch):
    """Issue #19: 100,000 frames of 16x16 once peaked at 1,106 MiB, every decoded frame held until the end."""
    files = noise_frames(tmp_path / "frames", 60)
    decoded: list[weakref.ref] = []
    most = 0
    opened = Image.open

    def counting_open(*args, **kwargs):
        nonlocal most
        img = opened(*args, **kwargs)
        decoded.append(weakref.ref(img))
        most = max(most, sum(r() is not None for r in decoded))
        return img

    monkeypatch.setattr(Image, "open", counting_open)
    made = make_timelapse(files, tmp_path / "long.gif", fps=10)
    monkeypatch.undo()
    assert most <= 2, f"{most} decoded frames alive at once"
    shown = timed_frames(made.path)
    assert made.frames == len(shown) == 60 and [ms for _, ms in shown] == [100] * 59 + [1000]
    assert np.abs(shown[-1][0] - rgb(files[-1])).mean() < 12  # the result, in 256 colours


def test_a_webp_holds_at_most_its_cap_and_says_so(tmp_path, monkeypatch, capsys):
    files = noise_frames(tmp_path / "frames", 12)
    monkeypatch.setattr(timelapse, "MAX_WEBP_FRAMES", 5, raising=False)  # Pillow's WebP writer takes every frame at once
    out = tmp_path / "capped.webp"
    assert main(["timelapse", str(tmp_path / "frames"), "-o", str(out)]) == 0
    said = capsys.readouterr()
    assert f"{out} (timelapse, 5 frames, 16x16)" in said.out
    assert "5 of 12 frames: a WebP holds at most 5" in said.err
    shown = gif_or_webp_frames(out)
    assert len(shown) == 5 and np.array_equal(shown[0], rgb(files[0])) and np.array_equal(shown[-1], rgb(files[-1]))


# -- the frames every job keeps --------------------------------------------------------------


class StepRunner(FakeRunner):
    """Reports a progress image at every step (its red channel = the step) and a result of its own."""

    def __call__(self, req: Request, on_progress, should_stop):
        for step in range(1, req.steps + 1):
            on_progress(FakeProgress(step, req.steps, 1.0, Image.new("RGB", (16, 16), (step * 10, 0, 0))))
        return FakeResult(Image.new("RGB", (16, 16), (0, 0, 250)), req, 0.01)


def queue_cfg(tmp_path: Path, max_frames: int = 100, **queue) -> Config:
    return Config(queue=QueueConfig(db_path=str(tmp_path / "jobs.sqlite3"), results_dir=str(tmp_path / "results"),
                                    **queue), timelapse=TimelapseConfig(max_frames=max_frames))


async def finished(q: JobQueue, job_id: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while (job := q.get(job_id)) is None or job.state != "finished":
        assert time.monotonic() < deadline and (job is None or job.state in ("queued", "running"))
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # the last frame is written on the queue's file thread


async def test_a_job_keeps_its_frames_thinned_evenly_ending_on_its_result(tmp_path):
    q = JobQueue(queue_cfg(tmp_path, max_frames=4), StepRunner())  # nobody listening: frames are kept anyway
    await q.start()
    try:
        job, _ = await q.submit(Request(prompt="a red apple", steps=10, width=16, height=16, seed=1), "alice")
        await finished(q, job.id)
        folder = q.frames_dir(job.id)
        assert folder is not None
        files = frame_files(folder)
        assert [f.name for f in files] == [frame_name(s) for s in (1, 4, 7, 10)]
        assert files[0].read_bytes() and rgb(files[0])[0, 0, 0] == 10  # the first progress frame
        assert files[-1].read_bytes() == Path(q.get(job.id).result_path).read_bytes()  # the result itself
        made = make_timelapse(files, tmp_path / "t.webp")
        assert made.frames == 4 and np.array_equal(gif_or_webp_frames(made.path)[-1], rgb(files[-1]))
        assert q.frames_dir("unknown-job") is None
    finally:
        await q.close()


async def test_frames_are_pruned_with_their_job(tmp_path):
    cfg = queue_cfg(tmp_path, keep_days=1)
    q = JobQueue(cfg, StepRunner())
    await q.start()
    job, _ = await q.submit(Request(prompt="old news", steps=3, width=16, height=16, seed=1), "bob")
    await finished(q, job.id)
    folder = q.frames_dir(job.id)
    assert folder is not None and len(frame_files(folder)) == 3
    await q.close()
    with sqlite3.connect(tmp_path / "jobs.sqlite3") as db:  # two days later
        db.execute("UPDATE jobs SET finished_at=? WHERE id=?", (time.time() - 2 * 86400, job.id))
    q2 = JobQueue(cfg, StepRunner())
    await q2.start()
    try:
        assert q2.get(job.id) is None and q2.frames_dir(job.id) is None and not folder.exists()
    finally:
        await q2.close()


async def test_a_job_without_frames_kept_has_no_frames_dir(tmp_path):
    q = JobQueue(queue_cfg(tmp_path, max_frames=0), StepRunner())
    await q.start()
    try:
        job, _ = await q.submit(Request(prompt="quiet", steps=3, width=16, height=16, seed=1), "carol")
        await finished(q, job.id)
        assert q.frames_dir(job.id) is None
    finally:
        await q.close()


class RetryingRunner(FakeRunner):
    """Runs out of memory at step 4 and begins again smaller, as the worker does (one job, two runs)."""

    def __call__(self, req: Request, on_progress, should_stop):
        for size, last in ((32, 4), (16, req.steps)):
            for step in range(1, last + 1):
                on_progress(FakeProgress(step, req.steps, 1.0, Image.new("RGB", (size, size), (step, 0, 0))))
        return FakeResult(Image.new("RGB", (16, 16), (0, 0, 250)), req, 0.01)


async def test_a_run_that_begins_again_smaller_keeps_only_the_new_runs_frames(tmp_path):
    q = JobQueue(queue_cfg(tmp_path), RetryingRunner())
    await q.start()
    try:
        job, _ = await q.submit(Request(prompt="too big", steps=6, width=32, height=32, seed=1), "dave")
        await finished(q, job.id)
        files = frame_files(q.frames_dir(job.id))
        assert [f.name for f in files] == [frame_name(s) for s in range(1, 7)]
        assert {Image.open(f).size for f in files} == {(16, 16)}
    finally:
        await q.close()


async def test_a_cancelled_job_leaves_no_frames(tmp_path):
    class Waiting(StepRunner):
        def __call__(self, req, on_progress, should_stop):
            on_progress(FakeProgress(1, req.steps, 1.0, Image.new("RGB", (16, 16))))
            while not should_stop():
                time.sleep(0.01)
            from engine.errors import Cancelled

            raise Cancelled("stopped")

    q = JobQueue(queue_cfg(tmp_path), Waiting())
    await q.start()
    try:
        job, _ = await q.submit(Request(prompt="never mind", steps=6, width=16, height=16, seed=1), "erin")
        deadline = time.monotonic() + 10
        while q.frames_dir(job.id) is None:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        folder = q.frames_dir(job.id)
        await q.cancel(job.id, by="erin")
        await asyncio.sleep(0.1)
        assert q.frames_dir(job.id) is None and not folder.exists()
    finally:
        await q.close()
