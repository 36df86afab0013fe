"""A user on a terminal: ``python -m engine describe IMG [-n N]`` with the tiny CLIP."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

from engine.cli import main

WORDS = {"subjects.txt": "a cat\na lighthouse on a cliff\na bowl of fruit\na red barn\na ship at sea\n",
         "media.txt": "an oil painting\na watercolor painting\na pencil sketch\n",
         "movements.txt": "romanticism\ncubism\nimpressionism\n",
         "artists.txt": "# one name a line\nJ. M. W. Turner\nClaude Monet\nPaul Klee\n",
         "flavours.txt": "dramatic lighting\nmisty\nneon lights\npastel colors\n"}
LINE = re.compile(r"^(\d\.\d{4})  (\S.*)$")


@pytest.fixture
def setup(tiny_config_path: Path, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A config with its own model cache, a small vocabulary folder, and a picture."""
    text = re.sub(r'(?m)^cache_dir = .*$', f'cache_dir = "{tmp_path / "cache"}"', tiny_config_path.read_text())
    (cfg := tmp_path / "config.toml").write_text(text)
    words = tmp_path / "words"
    words.mkdir()
    for name, entries in WORDS.items():
        (words / name).write_text(entries)
    Image.new("RGB", (48, 32), (30, 60, 160)).save(picture := tmp_path / "sea.png")
    return cfg, words, picture


def test_describe_prints_n_prompts_best_first_and_the_second_run_takes_the_cached_embeddings(setup, capsys):
    cfg, words, picture = setup
    assert main(["describe", str(picture), "-n", "3", "--vocab", str(words), "--config", str(cfg)]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert len(lines) == 3 and all(LINE.match(line) for line in lines)
    scores = [float(LINE.match(line)[1]) for line in lines]  # type: ignore[index]
    prompts = [LINE.match(line)[2] for line in lines]  # type: ignore[index]
    assert scores == sorted(scores, reverse=True) and len(set(prompts)) == 3
    for prompt in prompts:  # subject, medium, movement, artist, then up to three flavours
        parts = prompt.split(", ")
        assert 4 <= len(parts) <= 7 and parts[3].startswith("by ")
        assert parts[0] in WORDS["subjects.txt"].splitlines() and parts[1] in WORDS["media.txt"].splitlines()
    assert "embedding the vocabularies" in out.err  # the first run with this model
    tables = sorted((cfg.parent / "cache" / "describe").rglob("*.safetensors"))
    assert [t.name.split("-")[0] for t in tables] == ["artist", "flavour", "medium", "movement", "subject"]
    written = [t.stat().st_mtime_ns for t in tables]

    assert main(["describe", str(picture), "--vocab", str(words), "--config", str(cfg)]) == 0
    out = capsys.readouterr()
    assert "embedding" not in out.err and [t.stat().st_mtime_ns for t in tables] == written
    assert out.out.splitlines()[:3] == lines  # four asked: the same answer, one more of it


@pytest.mark.parametrize(("args", "says"), [
    (["-n", "0"], "ask for 1 to 10 suggestions (got 0)"),
    (["-n", "11"], "ask for 1 to 10 suggestions (got 11)"),
    (["--vocab", "no-such-folder"], "vocabulary folder no-such-folder: not found"),
])
def test_bad_input_is_one_line_and_exit_2(setup, capsys, args, says):
    cfg, words, picture = setup
    assert main(["describe", str(picture), *args, "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {says}"


def test_a_missing_or_unreadable_picture_is_one_line(setup, capsys, tmp_path):
    cfg, words, _ = setup
    assert main(["describe", str(tmp_path / "gone.png"), "--config", str(cfg)]) == 2
    assert capsys.readouterr().err.strip() == f"error: picture {tmp_path / 'gone.png'}: file not found"
    (notes := tmp_path / "notes.png").write_text("not a picture")
    assert main(["describe", str(notes), "--vocab", str(words), "--config", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: picture notes.png: not an image") and "\n" not in err
