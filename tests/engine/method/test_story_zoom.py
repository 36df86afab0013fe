"""Stories (prompts that change over a run) and zoom videos, with the tiny models."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from engine.cli import main
from engine.errors import UserError
from engine.media.imageio import read_metadata
from engine.method.generate import Progress, generate
from engine.models.loader import ModelCache
from engine.spec.prompts import parse_story, part_at
from engine.spec.request import Request
from tests.tinymodels import write_tiny_config

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def models(tiny_cfg):
    return ModelCache(tiny_cfg.models).get(Request.from_config(tiny_cfg, prompt="x").models)


def progress_of(models, req: Request) -> list[Progress]:
    seen: list[Progress] = []
    generate(models, req, on_progress=seen.append, progress_every=1)
    return seen


@pytest.mark.pixels
def test_a_story_switches_prompt_at_the_right_step_and_starts_as_its_first_part(tiny_cfg, models):
    story = Request.from_config(tiny_cfg, prompt="a forest ^ a forest on fire:2 ^ ashes", seed=5, steps=6)
    alone = story.with_changes(prompt="a forest")
    told, plain = progress_of(models, story), progress_of(models, alone)
    # 6 steps, 3 parts: the next part every 2 steps
    assert [p.part for p in told] == [0, 0, 1, 1, 2, 2]
    for a, b in zip(told[:2], plain[:2], strict=True):  # before the first switch: the first part alone
        assert torch.equal(a.frame, b.frame) and a.loss == b.loss  # the very same calls: exact on any CPU
    # From the switch on, the fire (weight 2) guides: the loss is another one, not the forest's give or
    # take rounding. (A quantised frame may still look the same one step later: rounding can undo a step.)
    assert all(abs(a.loss - b.loss) > 0.05 * b.loss for a, b in zip(told[2:], plain[2:], strict=True))


def test_story_every_sets_the_pace_and_the_metadata_records_the_story(tiny_config_path, tmp_path):
    out = tmp_path / "story.png"
    assert main(["imagine", "a castle ^ a ruin", "--steps", "4", "--story-every", "1", "--seed", "2",
                 "-o", str(out), "--config", str(tiny_config_path)]) == 0
    req = read_metadata(out)["request"]
    assert req["prompt"] == "a castle ^ a ruin" and req["story_every"] == 1
    assert [part_at(t, 4, 2, 1) for t in range(4)] == [0, 1, 1, 1]


def test_story_parts_keep_the_prompt_syntax_and_an_empty_part_is_refused():
    assert parse_story("a:2 | b:-1 ^ c") == ["a:2 | b:-1", "c"]
    with pytest.raises(UserError, match="story part 2 of 3 is empty"):
        parse_story("a ^ ^ c")


def decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as box:
        stream = box.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        return [f.to_ndarray(format="rgb24") for f in box.decode(stream)]


def zoom_args(out: Path, cfg: Path, *extra: str) -> list[str]:
    return ["zoom", "a city ^ a forest", "-o", str(out), "--frames", "6", "--steps-per-frame", "1",
            "--zoom", "1.1", "--rotate", "3", "--shift", "1", "0", "--seed", "7", "--config", str(cfg), *extra]


def test_a_zoom_video_decodes_to_its_frames_and_a_killed_run_resumes_to_the_same_frames(
        tiny_config_path, tmp_path, capsys):
    whole = tmp_path / "whole" / "zoom.mp4"
    assert main(zoom_args(whole, tiny_config_path)) == 0
    frames = sorted((tmp_path / "whole" / "zoom-frames").glob("*.png"))
    assert [f.name for f in frames] == [f"{k:05d}.png" for k in range(1, 7)]
    video = decoded(whole)
    assert len(video) == 6 and all(v.shape == (32, 32, 3) for v in video)
    assert not np.array_equal(np.asarray(Image.open(frames[0])), np.asarray(Image.open(frames[5])))

    # The same run, killed once its third frame is on disk, then resumed.
    cut = tmp_path / "cut" / "zoom.mp4"
    folder = tmp_path / "cut" / "zoom-frames"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "engine", *zoom_args(cut, tiny_config_path)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (folder / "00003.png").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert (folder / "00003.png").exists()
    for later in ("00004.png", "00005.png", "00006.png"):  # had the kill come a frame late
        (folder / later).unlink(missing_ok=True)
    assert not cut.exists()
    assert main(zoom_args(cut, tiny_config_path)) == 2  # no silent overwrite of a run's frames
    assert "--resume" in capsys.readouterr().err
    assert main([*zoom_args(cut, tiny_config_path, "--resume"), "--zoom", "1.5"]) == 2  # not the same run
    assert "zoom differ" in capsys.readouterr().err
    assert main(zoom_args(cut, tiny_config_path, "--resume")) == 0
    for k in range(1, 7):
        name = f"{k:05d}.png"
        assert (folder / name).read_bytes() == (tmp_path / "whole" / "zoom-frames" / name).read_bytes(), name
    assert len(decoded(cut)) == 6


@pytest.mark.parametrize(("extra", "words"), [
    (["--frames", "241"], "frames must be at most 240"),
    (["--frames", "200", "--steps-per-frame", "60"], "the limit is 10000"),
    (["--frames", "0"], "frames"),
    (["--fps", "0"], "--fps"),
])
def test_over_limit_zooms_are_refused_with_one_line(tiny_config_path, tmp_path, capsys, extra, words):
    out = tmp_path / "z.mp4"
    assert main(["zoom", "a city", "-o", str(out), *extra, "--config", str(tiny_config_path)]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "z-frames").exists()


def test_the_zoom_limits_come_from_the_config(tmp_path, capsys):
    cfg = write_tiny_config(tmp_path / "m", limits={"max_frames": 4, "max_video_steps": 6})
    out = tmp_path / "z.mp4"
    assert main(["zoom", "a city", "-o", str(out), "--frames", "5", "--config", str(cfg)]) == 2
    assert "frames must be at most 4" in capsys.readouterr().err
    assert main(["zoom", "a city", "-o", str(out), "--frames", "4", "--steps-per-frame", "2",
                 "--config", str(cfg)]) == 2
    assert "the limit is 6" in capsys.readouterr().err


@pytest.mark.pixels
def test_a_zoom_step_moves_zooms_and_fills_edges_by_reflection():
    from engine.method.zoom import zoom_frame

    prev = torch.rand(1, 3, 8, 12)
    assert torch.allclose(zoom_frame(prev, 1.0, 0.0, (0.0, 0.0)), prev, atol=1e-5)
    moved = zoom_frame(prev, 1.0, 0.0, (2.0, 0.0))  # the camera moves 2 pixels right
    assert torch.allclose(moved[..., :-2], prev[..., 2:], atol=1e-5)
    assert torch.allclose(moved[..., -2:], prev[..., -2:].flip(-1), atol=1e-5)  # mirrored at the edge, not black
    zoomed = zoom_frame(prev, 2.0, 0.0, (0.0, 0.0))
    assert zoomed.shape == prev.shape and zoomed.std() < prev.std()  # a quarter of the picture, blown up


def test_zoom_help_needs_no_torch():
    code = ("import sys\nfrom engine.cli import main\n"
            "try:\n    main(['zoom', '--help'])\nexcept SystemExit as e:\n    code = e.code\n"
            "print(code, 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True).stdout
    assert out.strip().endswith("0 False") and "--steps-per-frame" in out
