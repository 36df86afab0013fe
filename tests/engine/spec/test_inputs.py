"""A user on a terminal feeds odd input: absurd numbers, odd seeds, odd images, other people's PNGs.

Each is refused with one line and exit 2 before any work starts, or, for pictures, decoded the way
a person sees them.
"""

from __future__ import annotations

import io
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin

from engine.cli import main
from engine.config import load_config
from engine.jobs.events import JobProgress
from engine.media.imageio import load_rgb, open_image, read_metadata


def run(cfg: Path, *args: str) -> int:
    return main([*args, "--config", str(cfg)])


def refused(capsys, code: int, *expect: str) -> str:
    """Exit 2 and one line on stderr that says each of ``expect``."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for text in expect:
        assert text in err, err
    return err


def png_with_text(path: Path, text: str | None, size: tuple[int, int] = (32, 32)) -> Path:
    info = PngImagePlugin.PngInfo()
    if text is not None:
        info.add_text("vqgan-clip", text)
    Image.new("RGB", size, (90, 120, 30)).save(path, pnginfo=info)
    return path


# ------------------------------------------------------------------ 8. absurd numbers


@pytest.mark.parametrize(("args", "message"), [
    (["a castle:1e39"], "prompt weight in 'a castle:1e39' must be between -1000 and 1000"),
    (["a castle:1:inf"], "prompt stop in 'a castle:1:inf' must be between"),
    (["sky:-inf|a castle"], "prompt weight in 'sky:-inf'"),
    (["a castle", "--lr", "inf"], "lr: must be a finite number"),
    (["a castle", "--lr", "nan"], "lr: must be a finite number"),
    (["a castle", "--lr", "1e39"], "lr: must be at most 10"),
    (["a castle", "--cut-pow", "inf"], "cut_pow: must be a finite number"),
    (["a castle", "--keep-structure", "1e39"], "keep_structure: must be at most 1000"),
    (["a castle", "--image-prompt", "{ref}:1e39"], "image_prompts.0.weight: must be at most 1000"),
    (["a castle", "--image-prompt", "{ref}:nan"], "image_prompts.0.weight: must be a finite number"),
])
def test_non_finite_or_absurd_numbers_are_refused(tiny_config_path, tmp_path, capsys, args, message):
    ref = tmp_path / "ref.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(ref)
    out = tmp_path / "out.png"
    code = run(tiny_config_path, "imagine", *[a.format(ref=ref) for a in args], "-o", str(out), "--steps", "1")
    refused(capsys, code, message)
    assert not out.exists()


def test_an_absurd_seam_is_refused(tiny_config_path, tmp_path, capsys):
    holes = tmp_path / "holes.png"
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(holes)
    code = run(tiny_config_path, "edit", str(holes), "a bridge", "-o", str(tmp_path / "o.png"), "--seam", str(10**12))
    refused(capsys, code, "--seam must be between 0 and 128")


def test_a_run_whose_loss_becomes_nan_stops_at_once_with_a_message(tiny_cfg, tmp_path, capsys):
    """A broken checkpoint (a NaN in the decoder) makes every step NaN: the run stops at step 1
    instead of painting 40 black progress images and a black result."""
    sd = torch.load(tiny_cfg.models.vqgan_checkpoint, weights_only=True)
    sd["state_dict"]["decoder.conv_out.bias"][0] = math.nan
    broken = tmp_path / "broken.ckpt"
    torch.save(sd, broken)
    out, progress = tmp_path / "out.png", tmp_path / "progress"
    code = main(["imagine", "a lighthouse", "-o", str(out), "--steps", "40", "--device", "cpu",
                 "--vqgan-config", tiny_cfg.models.vqgan_config, "--vqgan-checkpoint", str(broken),
                 "--clip-config", tiny_cfg.models.clip_config, "--clip-checkpoint", tiny_cfg.models.clip_checkpoint,
                 "--size", "32", "32", "--cutouts", "4", "--save-every", "1", "--progress-dir", str(progress)])
    refused(capsys, code, "broke down at step 1", "nan")
    assert not out.exists()
    assert not list(progress.glob("*.png")), "no black progress images"


# ------------------------------------------------------------------ 9. seeds


@pytest.mark.parametrize("seed", [str(2**64), str(2**32), "-1"])
def test_seeds_outside_the_one_range_are_refused(tiny_config_path, tmp_path, capsys, seed):
    out = tmp_path / "out.png"
    code = run(tiny_config_path, "imagine", "a lighthouse", "-o", str(out), "--seed", seed, "--steps", "1")
    refused(capsys, code, f"seed: must be a whole number from 0 to {2**32 - 1}")
    assert not out.exists()


def test_the_largest_seed_paints_and_is_recorded(tiny_config_path, tmp_path):
    out = tmp_path / "out.png"
    assert run(tiny_config_path, "imagine", "a lighthouse", "-o", str(out), "--seed", str(2**32 - 1),
               "--steps", "1") == 0
    assert read_metadata(out)["request"]["seed"] == 2**32 - 1


# ------------------------------------------------------------------ 10. images and text


@pytest.mark.pixels
def test_a_16_bit_grey_png_keeps_its_tones():
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)  # black to white
    buf = io.BytesIO()
    Image.fromarray(ramp).save(buf, format="PNG")
    rgb = np.asarray(load_rgb(buf.getvalue())).astype(int)
    expected = np.round(ramp / 257).astype(int)
    assert np.abs(rgb[..., 0] - expected).max() <= 1
    assert (rgb == 255).all(-1).mean() < 0.01, "not washed out to white"


def _phone_photo(path: Path, orientation: int = 6) -> Path:
    """A 64x48 landscape as stored by a phone held upright: the EXIF says 'turn me 90 degrees'."""
    img = Image.new("RGB", (64, 48), (20, 40, 200))
    img.paste((230, 30, 30), (0, 0, 64, 16))  # red along the stored top edge
    exif = Image.Exif()
    exif[0x0112] = orientation
    img.save(path, format="JPEG", exif=exif, quality=95)
    return path


def test_a_phone_photo_is_edited_standing_upright(tiny_config_path, tmp_path):
    photo = _phone_photo(tmp_path / "phone.jpg")
    upright = np.asarray(load_rgb(photo)).astype(int)
    assert upright.shape[:2] == (64, 48)
    assert upright[:, -8:, 0].mean() > 180 and upright[:, :8, 0].mean() < 60, "stored top edge is now the right"
    out = tmp_path / "edited.png"
    assert run(tiny_config_path, "edit", str(photo), "a storm", "-o", str(out), "--steps", "1") == 0
    assert Image.open(out).size == (48, 64)


@pytest.mark.parametrize("fmt", ["TIFF", "PPM", "TGA", "PCX", "SGI", "ICO", "DDS", "IM"])
def test_formats_outside_the_documented_list_are_refused(tiny_config_path, tmp_path, capsys, fmt):
    src = tmp_path / "picture.img"
    Image.new("RGBA" if fmt == "DDS" else "RGB", (32, 32), (1, 2, 3)).save(src, format=fmt)
    code = run(tiny_config_path, "edit", str(src), "a storm", "-o", str(tmp_path / "out.png"), "--steps", "1")
    refused(capsys, code, "PNG, JPEG, WebP, GIF or BMP")


@pytest.mark.parametrize(("args", "what"), [
    (["imagine", "a \udcff castle"], "the prompt"),
    (["edit", "{src}", "a castle", "--region", "the \ud800 tower"], "the region phrase"),
])
def test_a_lone_surrogate_is_refused_before_the_run(tiny_config_path, tmp_path, capsys, args, what):
    """A non-UTF-8 byte in argv arrives as a lone surrogate; it must not fail only at the PNG's writing."""
    src = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(src)
    out = tmp_path / "out.png"
    code = run(tiny_config_path, *[a.format(src=src) for a in args], "-o", str(out), "--steps", "1")
    refused(capsys, code, f"{what} has a character that is not valid text")
    assert not out.exists()


def test_large_inputs_are_shrunk_while_decoding_to_twice_the_working_size():
    big = Image.new("RGB", (2000, 1500), (10, 200, 10))
    for fmt in ("JPEG", "PNG", "GIF"):
        buf = io.BytesIO()
        big.save(buf, format=fmt)
        img = open_image(buf.getvalue(), working_size=(128, 96))
        assert img.size == (256, 192), fmt
        assert np.asarray(img.convert("RGB"))[100, 100, 1] > 180, fmt
    buf = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    big.save(buf, format="JPEG", exif=exif)
    assert open_image(buf.getvalue(), working_size=(96, 128)).size == (192, 256), "turned upright, then fitted"
    small = io.BytesIO()
    Image.new("RGB", (100, 60)).save(small, format="PNG")
    assert open_image(small.getvalue(), working_size=(128, 96)).size == (100, 60), "never enlarged"


# ------------------------------------------------------------------ 11. other people's PNGs


def _made_here(tiny_config_path: Path) -> dict:
    """The metadata ``imagine`` writes for a one-step picture with the configured models."""
    from engine.spec.request import Request

    req = Request.from_config(load_config(tiny_config_path), prompt="a lighthouse", seed=5, steps=1)
    return {"engine_version": "0.1.0", "request": req.to_metadata()}


def _forged(path: Path, meta: dict) -> Path:
    return png_with_text(path, json.dumps(meta))


def test_rerun_refuses_a_clip_model_named_by_the_metadata(tiny_config_path, tmp_path, capsys, monkeypatch):
    import open_clip

    def no_fetch(*a, **k):
        raise AssertionError("a CLIP model was fetched")

    monkeypatch.setattr(open_clip, "create_model", no_fetch)
    meta = _made_here(tiny_config_path)
    meta["request"]["models"].update(clip_model="hf-hub:attacker/evil-clip", clip_pretrained=None,
                                     clip_config=None, clip_checkpoint=None)
    evil = _forged(tmp_path / "evil.png", meta)
    for command in ("rerun", "vary"):
        code = run(tiny_config_path, command, str(evil), "-o", str(tmp_path / f"{command}.png"))
        refused(capsys, code, "hf-hub:attacker/evil-clip", "neither a preset nor configured", "--clip-model")
        assert not (tmp_path / f"{command}.png").exists()


def test_rerun_refuses_model_files_the_metadata_names(tiny_config_path, tiny_cfg, tmp_path, capsys):
    elsewhere = tmp_path / "downloads"
    elsewhere.mkdir()
    ckpt = shutil.copy(tiny_cfg.models.vqgan_checkpoint, elsewhere / "model.ckpt")
    meta = _made_here(tiny_config_path)
    meta["request"]["models"]["vqgan_checkpoint"] = str(ckpt)
    code = run(tiny_config_path, "rerun", str(_forged(tmp_path / "evil.png", meta)), "-o", str(tmp_path / "o.png"))
    refused(capsys, code, str(ckpt), "not the configured one")


def test_a_model_chosen_on_the_command_line_wins_over_the_metadata(tiny_config_path, tiny_cfg, tmp_path):
    meta = _made_here(tiny_config_path)
    meta["request"]["models"].update(clip_model="hf-hub:attacker/evil-clip", clip_config=None, clip_checkpoint=None)
    evil = _forged(tmp_path / "evil.png", meta)
    out = tmp_path / "again.png"
    m = tiny_cfg.models
    assert run(tiny_config_path, "rerun", str(evil), "-o", str(out),
               "--clip-config", m.clip_config, "--clip-checkpoint", m.clip_checkpoint) == 0
    assert read_metadata(out)["request"]["models"]["clip_config"] == m.clip_config


@pytest.mark.pixels
def test_rerun_opens_only_images_beside_the_png(tiny_config_path, tmp_path, capsys):
    private = tmp_path / "private"
    private.mkdir()
    secret = private / "holiday.png"
    Image.new("RGB", (32, 32), (250, 200, 10)).save(secret)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    meta = _made_here(tiny_config_path)
    meta["request"].update(kind="edit", init_image=str(secret))
    evil = _forged(downloads / "evil.png", meta)
    code = run(tiny_config_path, "rerun", str(evil), "-o", str(downloads / "o.png"))
    refused(capsys, code, str(secret), "outside the PNG's folder")
    # An edit of a picture in the same folder reruns as before.
    beside = downloads / "mine.png"
    Image.new("RGB", (32, 32), (40, 90, 200)).save(beside)
    edited, again = downloads / "edited.png", downloads / "again.png"
    assert run(tiny_config_path, "edit", str(beside), "a storm", "-o", str(edited), "--steps", "1") == 0
    assert run(tiny_config_path, "rerun", str(edited), "-o", str(again)) == 0
    assert np.array_equal(np.asarray(Image.open(edited)), np.asarray(Image.open(again)))


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "metadata is not valid JSON"),
    ("[1, 2]", "metadata is not a JSON object"),
    ('{"request": [1]}', "no vqgan-clip request"),
    ('{"request": {"prompt": "x", "seed": 1e300}}', "seed: must be a whole number"),
    ('{"request": {"prompt": "x", "models": "evil"}}', "models in its metadata are not a JSON object"),
])
def test_malformed_metadata_is_one_line(tiny_config_path, tmp_path, capsys, text, message):
    bad = png_with_text(tmp_path / "bad.png", text)
    code = run(tiny_config_path, "rerun", str(bad), "-o", str(tmp_path / "o.png"))
    refused(capsys, code, message)


@pytest.mark.parametrize(("text", "message"), [
    ("{not json", "metadata is not valid JSON"),
    ('{"request": {"prompt": "x", "steps": "many"}}', "is not a number of steps"),
])
def test_vary_with_malformed_metadata_is_one_line(tiny_config_path, tmp_path, capsys, text, message):
    bad = png_with_text(tmp_path / "bad.png", text)
    code = run(tiny_config_path, "vary", str(bad), "-o", str(tmp_path / "o.png"))
    refused(capsys, code, message)


def test_the_shipped_defaults_pass_the_metadata_check(tmp_path):
    """Images made with the default config (a preset VQGAN, CLIP ViT-B-32/openai) can be rerun."""
    from engine.models.trust import trusted_models
    from engine.spec.request import Request

    cfg = load_config(None)
    meta = Request.from_config(cfg, prompt="x").to_metadata()
    assert trusted_models(meta["models"], cfg.models, source="x.png") == meta["models"]
    other = {**meta["models"], "vqgan": "wikiart_16384", "clip_model": "ViT-B-16", "clip_pretrained": "laion2b_s34b_b88k"}
    assert trusted_models(other, cfg.models, source="x.png") == other


async def test_a_job_that_breaks_down_in_a_batch_fails_alone_and_early(tmp_path):
    """Two users' jobs stepped together; one's z turns NaN (as a broken model or an overflow would do):
    that job fails at once with a message, the other finishes its picture."""
    import asyncio

    from engine.jobs.events import Failed, Finished
    from engine.queue import JobQueue
    from engine.spec.request import Request
    from engine.workers.runner import EngineRunner
    from tests.tinymodels import write_tiny_config

    class Breaking(EngineRunner):
        def start(self, request, on_progress=None):
            run = super().start(request, on_progress)
            if request.prompt == "doomed":
                with torch.no_grad():
                    run.z[..., 0, 0] = math.nan
            return run

    cfg = load_config(write_tiny_config(tmp_path, queue={"batch_size": 2}, generation={"progress_every": 1}))
    q = JobQueue(cfg, runner=Breaking(cfg))
    events: list = []
    q.subscribe(events.append)
    await q.start()
    doomed, _ = await q.submit(Request.from_config(cfg, prompt="doomed", seed=1, steps=30), owner="ana")
    fine, _ = await q.submit(Request.from_config(cfg, prompt="a calm sea", seed=2, steps=6), owner="ben")
    for _ in range(1500):
        if {type(e) for e in events} >= {Failed, Finished}:
            break
        await asyncio.sleep(0.02)
    await q.close()
    failed = [e for e in events if isinstance(e, Failed)]
    assert [e.job.id for e in failed] == [doomed.id]
    assert "broke down at step 1" in failed[0].reason
    assert [e.job.id for e in events if isinstance(e, Finished)] == [fine.id]
    assert not [e for e in events if isinstance(e, JobProgress) and e.job.id == doomed.id], "no black progress"
