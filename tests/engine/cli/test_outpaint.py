"""A user on a terminal zooms out of a picture and pans it: ``python -m engine outpaint`` with the tiny models."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.cli import main
from engine.media.imageio import read_metadata


def run(cfg: Path, *args: str) -> int:
    return main([*args, "--config", str(cfg)])


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.fixture(scope="module")
def barn(tiny_config_path, tmp_path_factory) -> Path:
    """A painted 32x32 picture (the tiny VQGAN's cells are 4 pixels) with its request in its metadata."""
    out = tmp_path_factory.mktemp("barn") / "barn.png"
    assert run(tiny_config_path, "imagine", "a red barn", "-o", str(out), "--seed", "5", "--steps", "2") == 0
    return out


@pytest.mark.pixels
def test_zoom_out_keeps_the_picture_bit_for_bit_beyond_the_seam_and_rerun_redoes_it(tiny_config_path, barn, tmp_path):
    out, again = tmp_path / "wide.png", tmp_path / "again.png"
    assert run(tiny_config_path, "outpaint", str(barn), "-o", str(out), "--zoom-out", "1.5", "--seam", "4",
               "--steps", "2") == 0
    before, after = pixels(barn), pixels(out)
    assert after.shape == (48, 48, 3)  # 1.5 times the size, the picture in the middle: 8 pixels each side
    reach = 4 + 4  # the seam, then the feather ([editing] feather = 4)
    assert np.array_equal(after[8 + reach:40 - reach, 8 + reach:40 - reach], before[reach:-reach, reach:-reach])
    assert not np.array_equal(after[8:40, 8:40], before)  # the seam was painted
    req = read_metadata(out)["request"]
    assert (req["kind"], req["prompt"], req["width"], req["height"]) == ("outpaint", "a red barn", 48, 48)
    assert req["outpaint"] == {"left": 8, "right": 8, "up": 8, "down": 8, "seam": 4}
    assert req["parent"] == f"sha256:{hashlib.sha256(barn.read_bytes()).hexdigest()[:16]} seed:5"
    assert run(tiny_config_path, "rerun", str(out), "-o", str(again)) == 0
    assert np.array_equal(pixels(again), after)


@pytest.mark.pixels
def test_pan_left_grows_one_side_to_whole_cells_with_a_new_prompt(tiny_config_path, barn, tmp_path):
    out = tmp_path / "left.png"
    assert run(tiny_config_path, "outpaint", str(barn), "-o", str(out), "--left", "10", "a barn by a lake",
               "--seam", "4", "--steps", "2") == 0
    after = pixels(out)
    assert after.shape == (32, 44, 3)  # 32 + 10, grown to 44 (whole 4-pixel cells), all of it on the left
    assert np.array_equal(after[:, 12 + 8:], pixels(barn)[:, 8:])  # every row, and the right edge: nothing grew there
    req = read_metadata(out)["request"]
    assert req["prompt"] == "a barn by a lake" and req["outpaint"]["left"] == 12 and req["outpaint"]["right"] == 0


def test_a_canvas_over_the_limits_or_nothing_to_grow_is_one_line_before_anything_runs(tiny_config_path, barn,
                                                                                       tmp_path, capsys):
    out = tmp_path / "never.png"
    for args, says in ((["--left", "2000"], "these margins would make the picture 2032x32, over the limit (1024x1024"),
                       (["--zoom-out", "4", "--up", "8"], "either --zoom-out or margins"),
                       ([], "nothing to paint"),
                       (["--zoom-out", "9"], "at most 4")):
        assert run(tiny_config_path, "outpaint", str(barn), "-o", str(out), *args) == 2
        err = capsys.readouterr().err
        assert says in err and err.count("\n") == 1, err
    assert not out.exists()
