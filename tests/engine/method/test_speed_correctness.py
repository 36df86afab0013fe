"""Speed work must not change pictures: batched jobs equal solo jobs, bf16 follows fp32, bench runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.cli import main
from engine.method.generate import generate, start, step_together
from engine.models.loader import ModelCache, Models
from engine.spec.request import Request


@pytest.fixture(scope="module")
def models(tiny_cfg) -> Models:
    return ModelCache(tiny_cfg.models).get(Request.from_config(tiny_cfg, prompt="x").models)


@pytest.mark.pixels
def test_jobs_stepped_together_give_the_same_images_as_alone(tiny_cfg, models, tmp_path):
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photo)
    mask = tmp_path / "mask.png"
    m = Image.new("L", (32, 32), 0)
    m.paste(255, (0, 0, 16, 16))
    m.save(mask)
    reqs = [
        Request.from_config(tiny_cfg, prompt="a red apple", seed=1, steps=4),
        Request.from_config(tiny_cfg, prompt="the sea:1|boats:-0.5", seed=2, steps=6, lr=0.1),
        Request.from_config(tiny_cfg, kind="edit", prompt="fire", seed=3, steps=3, init_image=str(photo),
                            mask=str(mask)),
    ]
    alone = [np.asarray(generate(models, r).image) for r in reqs]

    runs = [start(models, r) for r in reqs]
    while runs:  # a finished job leaves the batch, the others go on
        step_together(runs)
        for r in [r for r in runs if r.done]:
            together = np.asarray(r.result().image)
            # Each run is stepped with the calls of a solo run (the same shapes, so the same kernels).
            assert np.array_equal(together, alone[reqs.index(r.req)])
            runs.remove(r)


@pytest.mark.pixels
def test_a_job_joining_a_running_batch_matches_alone(tiny_cfg, models):
    a = Request.from_config(tiny_cfg, prompt="mountains", seed=5, steps=4)
    b = Request.from_config(tiny_cfg, prompt="a city at night", seed=6, steps=4)
    want = np.asarray(generate(models, b).image)
    ra = start(models, a)
    step_together([ra])
    step_together([ra])
    rb = start(models, b)  # joins at the next step
    while not rb.done:
        step_together([r for r in (ra, rb) if not r.done])
    assert np.array_equal(np.asarray(rb.result().image), want)


@pytest.mark.pixels
def test_a_fused_batch_follows_the_solo_losses_closely_but_promises_no_bits(tiny_cfg, models):
    # queue.batch_fused: one decoder and one CLIP call for the batch. Its sums round differently from a
    # solo run's, so only the first steps' losses are close; a picture after many steps is not promised.
    reqs = [Request.from_config(tiny_cfg, prompt=p, seed=s, steps=3) for s, p in ((1, "a kite"), (2, "a boat"))]
    alone: list[list[float]] = []
    for r in reqs:
        alone.append([])
        generate(models, r, on_progress=lambda p, out=alone[-1]: out.append(p.loss), progress_every=1)
    fused: list[list[float]] = [[], []]
    runs = [start(models, r, on_progress=lambda p, out=out: out.append(p.loss), progress_every=1)
            for r, out in zip(reqs, fused, strict=True)]
    while not all(r.done for r in runs):
        step_together(runs, fused=True)
    assert all(r.result().image.size == (32, 32) for r in runs)
    assert np.allclose(fused[0][:1] + fused[1][:1], alone[0][:1] + alone[1][:1], rtol=1e-4)


def test_bf16_autocast_loss_curve_follows_fp32(tiny_cfg, models):
    req = Request.from_config(tiny_cfg, prompt="a watercolour of a fox", seed=4, steps=12, width=64, height=64,
                              cutouts=8)

    def curve(m: Models) -> list[float]:
        seen: list[float] = []
        generate(m, req, on_progress=lambda p: seen.append(p.loss), progress_every=1)
        return seen

    fp32 = curve(models)
    bf16 = curve(Models(models.vqgan, models.clip, models.device, torch.bfloat16))
    assert len(fp32) == len(bf16) == 12
    # bf16 keeps 8 bits of mantissa: the loss follows fp32 within 1% at every step (measured: 0.14% at most).
    assert np.allclose(bf16, fp32, rtol=0.01), (fp32, bf16)


def test_bench_runs_on_the_tiny_models_and_reports_both_loops(tiny_config_path, capsys):
    assert main(["bench", "--config", str(tiny_config_path), "--size", "32", "32", "--cutouts", "4",
                 "--steps", "1", "--repeats", "1", "--warmup", "0", "--jobs", "1,2", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["ours_s_per_step"] > 0 and figures["reference_s_per_step"] > 0
    assert figures["speedup"] == pytest.approx(figures["reference_s_per_step"] / figures["ours_s_per_step"])
    assert set(figures["jobs_per_hour"]) == {"1", "2"}


def test_bench_grid_times_a_grid_s_job_against_one_picture_s(tiny_config_path, capsys):
    assert main(["bench", "--config", str(tiny_config_path), "--size", "32", "32", "--cutouts", "2",
                 "--steps", "1", "--repeats", "1", "--grid", "2", "--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert (figures["grid"], figures["steps"], figures["size"]) == (2, 1, "32x32")
    assert figures["grid_over_one"] == pytest.approx(figures["grid_s"] / figures["one_picture_s"])
    assert main(["bench", "--config", str(tiny_config_path), "--grid", "3"]) == 2
    assert "--grid must be one of 1, 2, 4, 6, 9" in capsys.readouterr().err
