"""A user on a terminal types parameters, sweeps and blends into the prompt of ``python -m engine imagine``."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from engine.cli import main
from engine.media.imageio import read_metadata


def run(cfg: Path, *args: str) -> int:
    return main([*args, "--config", str(cfg)])


def picture(path: Path, colour: tuple[int, int, int]) -> Path:
    Image.new("RGB", (16, 16), colour).save(path)
    return path


def test_parameters_set_the_request_and_flags_win(tiny_config_path, tmp_path):
    ref, out = picture(tmp_path / "ref.png", (200, 30, 30)), tmp_path / "lighthouse.png"
    assert run(tiny_config_path, "imagine", "a lighthouse --ar 2:1 --no people, text --seed 7 --steps 3 --iw 0.5",
               "--steps", "1", "--image-prompt", str(ref), "-o", str(out)) == 0
    req = read_metadata(out)["request"]
    assert req["prompt"] == "a lighthouse" and req["negative"] == ["people", "text"]
    assert req["parameters"] == "--ar 2:1 --no people, text --seed 7 --steps 3 --iw 0.5"
    assert (req["seed"], req["steps"]) == (7, 1)  # --steps 1 on the command line beats --steps 3 in the prompt
    assert req["width"] / req["height"] >= 2 and req["width"] % 16 == 0 and req["height"] % 16 == 0
    assert req["image_prompts"] == [{"path": str(ref), "weight": 0.5}]


def test_bad_parameters_and_braces_are_one_line_before_any_work(tiny_config_path, tmp_path, capsys):
    out = tmp_path / "never.png"
    for prompt, expect in (("a cat --chaos 5", "unknown parameter '--chaos'; parameters: --ar W:H"),
                           ("a cat --seed 1 --seed 2", "--seed is given twice; parameters:"),
                           ("a cat --ar wide", "--ar 'wide'"),
                           ("a {red, blue car", "never closed"),
                           ("a {a,b,c} {d,e,f} car", "this sweep makes 9 prompts; at most 8 jobs"),
                           ("a cat --style noir", "styles are kept per Discord user"),
                           ("a cat --iw 2", "--iw weighs the image prompts, and there are none"),
                           ("a cat --model nope", "unknown VQGAN preset 'nope'"),
                           ("a cat --clip RN50/nope", "unknown CLIP model 'RN50/nope'")):
        assert run(tiny_config_path, "imagine", prompt, "-o", str(out)) == 2
        err = capsys.readouterr().err
        assert expect in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for prompt, expect in (("a {red, blue} city", "a zoom video is one job, and this prompt makes 2"),
                           ("a city --steps 3", "--steps: a zoom paints --steps-per-frame steps")):
        assert run(tiny_config_path, "zoom", prompt, "-o", str(tmp_path / "never.mp4")) == 2
        err = capsys.readouterr().err
        assert expect in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.iterdir())


def test_a_sweep_writes_numbered_pictures_in_order_and_prints_each_prompt(tiny_config_path, tmp_path, capsys):
    out = tmp_path / "cat.png"
    assert run(tiny_config_path, "imagine", "a {red, blue} cat --seed 3", "--steps", "1", "--size", "16", "16",
               "-o", str(out)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == ["a red cat", "a blue cat"]
    assert [line.split(" ")[0] for line in lines] == [str(tmp_path / "cat-1.png"), str(tmp_path / "cat-2.png")]
    made = [read_metadata(tmp_path / f"cat-{k}.png")["request"] for k in (1, 2)]
    assert [(r["prompt"], r["seed"]) for r in made] == [("a red cat", 3), ("a blue cat", 3)]
    assert not out.exists()


def test_a_blend_of_pictures_alone_needs_no_words(tiny_config_path, tmp_path):
    a, b = picture(tmp_path / "a.png", (200, 0, 0)), picture(tmp_path / "b.png", (0, 0, 200))
    out = tmp_path / "blend.png"
    assert run(tiny_config_path, "imagine", "", "--image-prompt", str(a), "--image-prompt", f"{b}:2",
               "--steps", "1", "--size", "16", "16", "-o", str(out)) == 0
    req = read_metadata(out)["request"]
    assert req["prompt"] == "" and [p["weight"] for p in req["image_prompts"]] == [1.0, 2.0]
