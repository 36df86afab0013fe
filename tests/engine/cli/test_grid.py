"""A user on a terminal asks for a grid of candidates, reruns one of them, and upscales one (issue 21)."""

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


def config_with(tiny_config_path: Path, folder: Path, extra: str) -> Path:
    """The tiny models' config with more tables (e.g. ``[editing]``, ``[limits]``)."""
    path = folder / "config.toml"
    path.write_text(tiny_config_path.read_text() + "\n" + extra)
    return path


@pytest.fixture(scope="module")
def grid_of_four(tiny_config_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``imagine --grid 4`` once for the module: out.png and out-1.png .. out-4.png."""
    out = tmp_path_factory.mktemp("grid") / "out.png"
    assert run(tiny_config_path, "imagine", "a lighthouse at dusk", "-o", str(out), "--grid", "4", "--seed", "5",
               "--steps", "2", "--size", "32", "32") == 0
    return out


@pytest.mark.pixels
def test_a_grid_of_four_is_one_picture_and_four_candidates_and_rerun_gives_candidate_3_again(
        tiny_config_path, grid_of_four, capsys):
    out = grid_of_four
    grid = pixels(out)
    assert grid.shape == (64, 64, 3)  # 2x2 cells of 32x32
    assert read_metadata(out)["request"]["grid"] == 4
    cells = [(0, 0), (0, 32), (32, 0), (32, 32)]  # candidate 1 top left, then left to right, top to bottom
    for i, (y, x) in enumerate(cells, 1):
        candidate = out.with_name(f"out-{i}.png")
        req = read_metadata(candidate)["request"]
        assert (req["grid"], req["seed"], req["prompt"], req["steps"]) == (1, 4 + i, "a lighthouse at dusk", 2)
        assert req["parent"].startswith("sha256:") and req["parent"].endswith(f"seed:5 #{i}")
        assert np.array_equal(grid[y:y + 32, x:x + 32], pixels(candidate))
    assert not np.array_equal(pixels(out.with_name("out-1.png")), pixels(out.with_name("out-2.png")))

    again = out.with_name("again-3.png")
    assert run(tiny_config_path, "rerun", str(out.with_name("out-3.png")), "-o", str(again)) == 0
    assert np.array_equal(pixels(again), pixels(out.with_name("out-3.png")))  # the candidate is its solo run
    assert read_metadata(again)["request"]["seed"] == 7


def test_a_grid_of_another_size_is_refused_in_one_line(tiny_config_path, tmp_path, capsys):
    assert run(tiny_config_path, "imagine", "a cat", "-o", str(tmp_path / "o.png"), "--grid", "3") == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: grid: must be 1, 2, 4, 6 or 9" and not list(tmp_path.iterdir())


def test_upscale_doubles_the_size_with_its_own_prompt_and_names_its_parent(tiny_config_path, grid_of_four, tmp_path):
    cfg = config_with(tiny_config_path, tmp_path, "[editing]\nupscale_steps = 2\n")
    candidate, up = grid_of_four.with_name("out-2.png"), tmp_path / "up.png"
    assert run(cfg, "upscale", str(candidate), "-o", str(up)) == 0
    assert Image.open(up).size == (64, 64)
    req = read_metadata(up)["request"]
    assert (req["kind"], req["prompt"], req["steps"], req["seed"]) == ("upscale", "a lighthouse at dusk", 2, 6)
    assert req["init_image"] == str(candidate.resolve()) and req["keep_structure"] > 0
    assert req["parent"].startswith("sha256:") and req["parent"].endswith("seed:6")
    assert not np.array_equal(pixels(up), np.asarray(Image.open(candidate).convert("RGB").resize((64, 64))))


def test_an_upscale_over_the_limits_is_refused_before_anything_runs_with_the_largest_scale(
        tiny_config_path, tmp_path, capsys):
    cfg = config_with(tiny_config_path, tmp_path, "[limits]\nmax_width = 64\nmax_height = 64\n")
    photo = tmp_path / "photo.png"
    Image.new("RGB", (48, 48), (10, 120, 200)).save(photo)
    assert run(cfg, "upscale", str(photo), "a blue sea", "-o", str(tmp_path / "big.png")) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: upscaling 48x48 by 2 gives 96x96, over the limit (64x64, 409600 pixels in all); "
                   "the largest scale for this 48x48 picture is 1.33")
    assert not (tmp_path / "big.png").exists()
    assert run(cfg, "upscale", str(photo), "-o", str(tmp_path / "big.png"), "--steps", "1") == 2
    assert "has no prompt in its metadata" in capsys.readouterr().err
