"""Details of the method that the public notebooks get right: z stays near the codebook, Gumbel
models are edited from their own codes, cutouts are not shifted, and what a user is shown is
what the engine painted."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cli import main
from engine.media.imageio import read_metadata
from engine.method.cutouts import cutouts, make_cutouts
from engine.method.generate import Run, generate, prepare, start, step_together
from engine.method.ops import vector_quantize
from engine.models.loader import ModelCache
from engine.models.vqgan import load_vqgan
from engine.spec.request import Request
from tests.tinymodels import write_tiny_gumbel_vqgan, write_tiny_vqgan


@pytest.fixture(scope="module")
def models(tiny_cfg):
    return ModelCache(tiny_cfg.models).get(Request.from_config(tiny_cfg, prompt="x").models)


def codebook_box(models) -> tuple[torch.Tensor, torch.Tensor]:
    book = models.vqgan.codebook
    return book.min(0).values[None, :, None, None], book.max(0).values[None, :, None, None]


def inside(z: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    return (z >= lo) & (z <= hi)


@pytest.mark.pixels
def test_z_stays_within_the_codebooks_range_at_every_step(tiny_cfg, models):
    # A bold learning rate pushes z hard; the codebook's per-channel range still bounds it.
    req = Request.from_config(tiny_cfg, prompt="a storm over the sea", seed=1, steps=8, lr=1.0)
    run = start(models, req)
    lo, hi = codebook_box(models)
    moved_to_edge = False
    while not run.done:
        step_together([run])
        z = run.z.detach()
        assert inside(z, lo, hi).all(), f"step {run.step_no}: z left the codebook's range"
        moved_to_edge |= bool(((z == lo) | (z == hi)).any())
    assert moved_to_edge, "the optimiser did push against the range (the clamp was exercised)"


@pytest.mark.pixels
def test_masked_edit_clamps_only_the_masked_cells_the_rest_stay_frozen(tiny_cfg, tmp_path):
    # A narrow codebook, so that the encoded photo lies partly beyond its range.
    vq_yaml, vq_ckpt = write_tiny_vqgan(tmp_path / "narrow", codebook_std=0.2)
    spec = Request.from_config(tiny_cfg, prompt="x").models.model_copy(
        update={"vqgan_config": str(vq_yaml), "vqgan_checkpoint": str(vq_ckpt)})
    models = ModelCache(tiny_cfg.models).get(spec)
    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photo)
    m = Image.new("L", (32, 32), 0)
    m.paste(255, (0, 0, 16, 16))
    m.save(mask)
    req = Request.from_config(tiny_cfg, prompt="a golden sun", kind="edit", init_image=str(photo),
                              mask=str(mask), seed=2, steps=6, lr=1.0, width=32, height=32, models=spec)
    run = start(models, req)
    lo, hi = codebook_box(models)
    cells = run.edit.cells.bool().expand_as(run.z0)
    assert not inside(run.z0, lo, hi)[~cells].all(), "the encoded photo has values beyond the codebook's range"
    while not run.done:
        step_together([run])
    z = run.z.detach()
    assert torch.equal(z[~cells], run.z0[~cells]), "cells outside the mask are never touched, not even clamped"
    assert inside(z, lo, hi)[cells].all()
    assert not torch.equal(z[cells], run.z0[cells])


@pytest.mark.pixels
def test_editing_a_gumbel_vqgan_starts_from_the_models_own_codes(tmp_path):
    vq = load_vqgan(*write_tiny_gumbel_vqgan(tmp_path))
    assert vq.gumbel
    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        z = vq.encode(x)
        own = vq.quantize.proj(vq.quant_conv(vq.encoder(x))).argmax(1)  # GumbelQuantize's noise-free code
        snapped = vector_quantize(z, vq.codebook)
    assert torch.equal(snapped, vq.codebook[own].movedim(-1, 1)), "the edit starts from the model's own codes"


@pytest.mark.pixels
def test_a_full_size_cutout_reproduces_the_image_and_a_half_size_one_averages_pixel_pairs():
    ramp = torch.arange(32, dtype=torch.float32).expand(1, 3, 32, 32).contiguous()  # 0, 1, ..., 31 per row
    full = make_cutouts(ramp, 1, 32)
    assert torch.allclose(full, ramp, atol=1e-4), "no half-pixel shift, no blur"
    big = torch.arange(64, dtype=torch.float32).expand(1, 3, 64, 64).contiguous()
    half = cutouts(big, torch.tensor([[0.0, 0.0, 64.0, 64.0]]), 32)
    assert torch.allclose(half[0, 0, 0], torch.arange(32) * 2 + 0.5, atol=1e-4), "area average of pixel pairs"


def cli(cfg, *args: str) -> int:
    return main([*args, "--config", str(cfg)])


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("strength", ["0", "2", "-0.5"])
def test_vary_strength_outside_0_to_1_is_refused(tiny_config_path, tmp_path, capsys, strength):
    parent = tmp_path / "parent.png"
    assert cli(tiny_config_path, "imagine", "a lighthouse", "-o", str(parent), "--steps", "2") == 0
    capsys.readouterr()
    out = tmp_path / "child.png"
    assert cli(tiny_config_path, "vary", str(parent), "-o", str(out), "--strength", strength) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --strength must be more than 0 and at most 1"
    assert not out.exists()


def test_a_size_rounded_down_is_the_size_recorded(tiny_config_path, tmp_path, capsys):
    out = tmp_path / "o.png"
    assert cli(tiny_config_path, "imagine", "a red apple", "-o", str(out), "--size", "50", "50") == 0
    assert "note: size rounded down" in capsys.readouterr().err
    req = read_metadata(out)["request"]
    assert Image.open(out).size == (48, 48) == (req["width"], req["height"])
    again = tmp_path / "again.png"
    assert cli(tiny_config_path, "rerun", str(out), "-o", str(again)) == 0
    assert np.array_equal(pixels(out), pixels(again))


@pytest.mark.pixels
def test_the_last_progress_image_is_the_result(tiny_config_path, tmp_path):
    out, prog = tmp_path / "o.png", tmp_path / "progress"
    assert cli(tiny_config_path, "imagine", "stars", "-o", str(out), "--steps", "4",
               "--save-every", "2", "--progress-dir", str(prog)) == 0
    assert np.array_equal(pixels(prog / "00004.png"), pixels(out))


@pytest.mark.pixels
def test_the_last_progress_frame_of_a_masked_edit_is_the_result(tiny_cfg, models, tmp_path):
    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photo)
    m = Image.new("L", (32, 32), 0)
    m.paste(255, (8, 8, 24, 24))
    m.save(mask)
    req = Request.from_config(tiny_cfg, prompt="a blue door", kind="edit", init_image=str(photo), mask=str(mask),
                              seed=3, steps=3, width=32, height=32)
    frames = []
    result = generate(models, req, on_progress=frames.append, progress_every=1)
    assert [f.step for f in frames] == [1, 2, 3]
    assert np.array_equal(np.asarray(frames[-1].image), np.asarray(result.image))


def test_bench_says_what_it_is_doing_on_stderr_and_keeps_stdout_for_figures(tiny_config_path, capsys):
    assert main(["bench", "--config", str(tiny_config_path), "--size", "32", "32", "--cutouts", "2",
                 "--steps", "1", "--repeats", "2", "--warmup", "0", "--jobs", "1,2"]) == 0
    out, err = capsys.readouterr()
    phases = [line for line in err.splitlines() if line.startswith("bench: ")]
    assert [p.split(":")[1].split()[0].strip(",") for p in phases] == ["loading", "ours", "reference", "measuring",
                                                            "measuring", "2"]
    assert "speedup" in out and "bench:" not in out


@pytest.mark.pixels
def test_the_l2_term_pulls_z_towards_zero(tiny_cfg, models):
    # On the tiny models its gradient is about as large as CLIP's, so it shows; at the real shapes it is
    # 24-86x smaller at the default weight (README, "How the engine works").
    def rms_after(weight: float) -> float:
        run = start(models, Request.from_config(tiny_cfg, prompt="a quiet harbour", seed=4, steps=6, z_l2_weight=weight))
        while not run.done:
            step_together([run])
        return run.z.detach().pow(2).mean().sqrt().item()

    assert rms_after(1.0) < rms_after(0.1) < rms_after(0.0)


@pytest.mark.pixels
def test_a_prepared_edit_needs_its_files_no_more_and_paints_what_generate_paints(tiny_cfg, models, tmp_path):
    # prepare() reads the files and embeds the prompts; a Run only steps tensors (k-diffusion style).
    photo, mask = tmp_path / "photo.png", tmp_path / "mask.png"
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photo)
    m = Image.new("L", (32, 32), 0)
    m.paste(255, (8, 8, 24, 24))
    m.save(mask)
    req = Request.from_config(tiny_cfg, prompt="a lantern", kind="edit", init_image=str(photo), mask=str(mask),
                              seed=5, steps=3, keep_structure=0.5)
    want = np.asarray(generate(models, req).image)
    inputs = prepare(models, req)
    photo.unlink()
    mask.unlink()
    assert inputs.edit is not None and inputs.edit.pixels.shape[-2:] == (32, 32)
    run = Run(models, inputs)
    while not run.done:
        step_together([run])
    result = run.result()
    assert np.array_equal(np.asarray(result.image), want), "the same picture as in one go, without the files"
    assert result.mask is not None
