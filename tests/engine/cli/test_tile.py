"""A user paints seamless tiles on a terminal: ``imagine --tile-x``, ``edit --tile``, and a rerun that tiles again."""

from __future__ import annotations

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


@pytest.mark.pixels
def test_a_tile_is_recorded_in_the_metadata_and_its_rerun_tiles_again(tiny_config_path, tmp_path):
    tile, plain, again, edited = (tmp_path / n for n in ("tile.png", "plain.png", "again.png", "edited.png"))
    for out, flags in ((tile, ["--tile-x"]), (plain, [])):
        assert run(tiny_config_path, "imagine", "a brick wall", "-o", str(out), "--seed", "4", "--steps", "2",
                   *flags) == 0
    assert read_metadata(tile)["request"]["tile"] == "x" and read_metadata(plain)["request"]["tile"] == "none"
    assert not np.array_equal(pixels(tile), pixels(plain))  # the decoder wrapped around, the cutouts rolled
    assert run(tiny_config_path, "rerun", str(tile), "-o", str(again)) == 0
    assert read_metadata(again)["request"]["tile"] == "x" and np.array_equal(pixels(again), pixels(tile))

    assert run(tiny_config_path, "edit", str(plain), "moss on bricks", "-o", str(edited), "--tile", "--steps", "1") == 0
    req = read_metadata(edited)["request"]
    assert (req["kind"], req["tile"]) == ("edit", "xy")


def test_tile_and_tile_x_together_are_refused_in_one_line(tiny_config_path, tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        run(tiny_config_path, "imagine", "a brick wall", "-o", str(tmp_path / "o.png"), "--tile", "--tile-x")
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "not allowed with argument" in err and err.count("\n") == 1
