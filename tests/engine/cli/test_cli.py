"""A user on a terminal: ``python -m engine imagine/edit/rerun`` with the tiny models."""

from __future__ import annotations

import io
import subprocess
import sys
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


def test_imagine_writes_png_of_requested_size_with_request_metadata(tiny_config_path, tmp_path):
    out = tmp_path / "forest.png"
    assert run(tiny_config_path, "imagine", "a forest rendered in low poly", "-o", str(out),
               "--size", "48", "32", "--seed", "7", "--steps", "3") == 0
    img = Image.open(out)
    assert img.format == "PNG" and img.size == (48, 32)
    meta = read_metadata(out)
    assert meta["engine_version"]
    req = meta["request"]
    assert req["prompt"] == "a forest rendered in low poly"
    assert (req["seed"], req["steps"], req["width"], req["height"]) == (7, 3, 48, 32)
    assert req["models"]["vqgan_checkpoint"].endswith("tiny_vqgan.ckpt")
    assert req["models"]["clip_config"].endswith("tiny_clip.json")


@pytest.mark.pixels
def test_same_seed_same_pixels_other_seed_other_pixels(tiny_config_path, tmp_path):
    a, b, c = (tmp_path / n for n in ("a.png", "b.png", "c.png"))
    for out, seed in ((a, "1"), (b, "1"), (c, "2")):
        assert run(tiny_config_path, "imagine", "a red apple|green:-0.5", "-o", str(out), "--seed", seed) == 0
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(c))


@pytest.mark.pixels
def test_rerun_from_png_metadata_gives_the_same_image(tiny_config_path, tmp_path):
    first, again = tmp_path / "first.png", tmp_path / "again.png"
    assert run(tiny_config_path, "imagine", "a lighthouse", "-o", str(first), "--seed", "3") == 0
    assert run(tiny_config_path, "rerun", str(first), "-o", str(again)) == 0
    assert np.array_equal(pixels(first), pixels(again))


def test_progress_images_saved_every_n_steps(tiny_config_path, tmp_path):
    out, prog = tmp_path / "o.png", tmp_path / "progress"
    assert run(tiny_config_path, "imagine", "stars", "-o", str(out), "--steps", "4",
               "--save-every", "2", "--progress-dir", str(prog)) == 0
    assert sorted(p.name for p in prog.iterdir()) == ["00002.png", "00004.png"]


def test_image_prompt_is_used(tiny_config_path, tmp_path):
    ref = tmp_path / "ref.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(ref)
    out = tmp_path / "o.png"
    assert run(tiny_config_path, "imagine", "a cat", "-o", str(out), "--image-prompt", f"{ref}:0.5") == 0
    assert read_metadata(out)["request"]["image_prompts"] == [{"path": str(ref), "weight": 0.5}]


@pytest.mark.pixels
def test_edit_with_mask_keeps_pixels_outside_it(tiny_config_path, tmp_path):
    src = tmp_path / "photo.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(src)
    mask = tmp_path / "mask.png"
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (0, 0, 24, 24))
    m.save(mask)
    out = tmp_path / "edited.png"
    assert run(tiny_config_path, "edit", str(src), "a golden sun", "--mask", str(mask), "-o", str(out),
               "--feather", "4", "--steps", "3") == 0
    before, after = pixels(src).astype(int), pixels(out).astype(int)
    assert after.shape == before.shape
    changed = np.abs(after - before).sum(-1) > 0
    assert changed[:24, :24].mean() > 0.5, "the masked square was edited"
    keep = np.ones((64, 64), bool)
    keep[: 24 + 4, : 24 + 4] = False  # the mask and its feathered edge
    assert not changed[keep].any(), "every pixel beyond the feathered edge is the input's"
    assert read_metadata(out)["request"]["kind"] == "edit"


def test_edit_without_mask_starts_from_the_image(tiny_config_path, tmp_path):
    src = tmp_path / "in.png"
    Image.new("RGB", (80, 48), (10, 120, 200)).save(src)
    out = tmp_path / "out.png"
    assert run(tiny_config_path, "edit", str(src), "a storm", "-o", str(out)) == 0
    assert Image.open(out).size == (80, 48)  # aspect kept, multiple of 16


def _bad(tmp: Path) -> dict[str, Path]:
    files = {"zero": tmp / "zero.png", "text": tmp / "notes.png", "trunc": tmp / "trunc.png",
             "bomb": tmp / "bomb.png", "ok": tmp / "ok.png", "mask_odd": tmp / "mask.png"}
    files["zero"].write_bytes(b"")
    files["text"].write_text("this is not an image")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
    files["ok"].write_bytes(buf.getvalue())
    files["trunc"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    Image.new("1", (10000, 10000)).save(files["bomb"])  # 100 Mpx, a few KiB on disk
    Image.new("L", (64, 16)).save(files["mask_odd"])
    return files


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["imagine", "", "-o", "{out}"], "prompt is empty"),
        (["imagine", "  |  ", "-o", "{out}"], "prompt is empty"),
        (["imagine", "\u200b\u200b\u200b", "-o", "{out}"], "prompt is empty"),  # zero-width spaces show nothing
        (["imagine", "\u2060 \ufeff|\u200d", "-o", "{out}"], "prompt is empty"),
        (["edit", "{ok}", "a coat", "--region", "\u200b", "-o", "{out}"], "region phrase is empty"),
        (["imagine", "x", "-o", "{out}", "--steps", "0"], "steps: must be at least 1"),
        (["imagine", "x", "-o", "{out}", "--steps", "100000"], "steps must be between 1 and"),
        (["imagine", "x", "-o", "{out}", "--size", "5000", "5000"], "over the limit"),
        (["imagine", "x", "-o", "{out}", "--bogus"], "unrecognized arguments"),
        (["edit", "{missing}", "x", "-o", "{out}"], "file not found"),
        (["edit", "{zero}", "x", "-o", "{out}"], "the file is empty"),
        (["edit", "{text}", "x", "-o", "{out}"], "not an image"),
        (["edit", "{trunc}", "x", "-o", "{out}"], "damaged or truncated"),
        (["edit", "{bomb}", "x", "-o", "{out}"], "pixel limit"),
        (["edit", "{ok}", "x", "-o", "{out}", "--mask", "{mask_odd}"], "same shape as the image"),
        (["imagine", "x", "-o", "{out}", "--image-prompt", "{text}"], "not an image"),
        (["imagine", "x", "-o", "{out}", "--vqgan-config", "{missing}", "--vqgan-checkpoint", "{ok}"],
         "model file not found"),
    ],
)
def test_bad_input_exits_2_with_one_line(tiny_config_path, tmp_path, capsys, args, message):
    files = {k: str(v) for k, v in _bad(tmp_path).items()}
    files.update(out=str(tmp_path / "out.png"), missing=str(tmp_path / "missing.png"))
    with pytest.raises(SystemExit) if "--bogus" in args else _nullcontext() as exc:
        code = run(tiny_config_path, *[a.format(**files) for a in args])
    code = exc.value.code if exc is not None and hasattr(exc, "value") else code
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_missing_preset_file_names_url_and_place(tmp_path, monkeypatch):
    """No network here: a preset that is not cached fails with where to put it by hand."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[models]\ncache_dir = "{tmp_path / "cache"}"\nclip_config = ""\n')
    proc = subprocess.run(
        [sys.executable, "-m", "engine", "imagine", "x", "-o", str(tmp_path / "o.png"), "--config", str(cfg),
         "--steps", "1", "--device", "cpu"],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
                                                          "http_proxy": "http://127.0.0.1:9",
                                                          "https_proxy": "http://127.0.0.1:9"},
    )
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(tmp_path / "cache") in proc.stderr and "http" in proc.stderr
