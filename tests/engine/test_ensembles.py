"""Several CLIP models guiding one picture (an ensemble), and choosing models per request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cli import main
from engine.config import load_config
from engine.errors import UserError
from engine.media.imageio import read_metadata
from engine.method.generate import Run, prepare, synth
from engine.models.loader import ModelCache
from engine.spec.choices import with_choices
from engine.spec.request import Request
from tests.tinymodels import write_tiny_clip, write_tiny_clip_48, write_tiny_config


@pytest.fixture(scope="module")
def two_clips(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A tiny config (one 32-pixel CLIP) and the flags that name it plus a 48-pixel one."""
    folder = tmp_path_factory.mktemp("ensemble")
    cfg = write_tiny_config(folder)
    a = write_tiny_clip(folder / "models")
    b = write_tiny_clip_48(folder / "models")
    flags = ["--clip-config", str(a[0]), "--clip-checkpoint", str(a[1]),
             "--clip-config", str(b[0]), "--clip-checkpoint", str(b[1])]
    return cfg, flags


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.pixels
def test_an_ensemble_of_two_clips_paints_names_both_and_reruns(two_clips, tmp_path):
    cfg, flags = two_clips
    out, again = tmp_path / "duo.png", tmp_path / "again.png"
    assert main(["imagine", "a lighthouse", "-o", str(out), "--seed", "5", "--config", str(cfg), *flags,
                 "--clip-weight", "0.7", "--clip-weight", "0.3"]) == 0
    models = read_metadata(out)["request"]["models"]
    assert models["clip_config"].endswith("tiny_clip.json")
    assert [c["clip_config"].rsplit("/", 1)[-1] for c in models["more_clips"]] == ["tiny_clip_48.json"]
    assert models["clip_weights"] == [0.7, 0.3]
    # The rerun names the same local files (only configured or named model files are trusted).
    assert main(["rerun", str(out), "-o", str(again), "--config", str(cfg), *flags,
                 "--clip-weight", "0.7", "--clip-weight", "0.3"]) == 0
    assert np.array_equal(pixels(out), pixels(again))
    assert read_metadata(again)["request"]["models"] == models


@pytest.mark.pixels
def test_an_ensemble_configured_in_config_toml_reruns_from_metadata_alone(tmp_path):
    b = write_tiny_clip_48(tmp_path / "models")
    cfg = write_tiny_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("[models]\n", "[models]\nmore_clips = [{ clip_config = "
                                           f"'{b[0]}', clip_checkpoint = '{b[1]}' }}]\n"))
    out, again = tmp_path / "duo.png", tmp_path / "again.png"
    assert main(["imagine", "waves", "-o", str(out), "--seed", "2", "--config", str(cfg)]) == 0
    assert len(read_metadata(out)["request"]["models"]["more_clips"]) == 1
    assert main(["rerun", str(out), "-o", str(again), "--config", str(cfg)]) == 0
    assert np.array_equal(pixels(out), pixels(again))


@pytest.mark.pixels
def test_ensemble_loss_is_the_weighted_sum_of_each_models_loss_on_the_same_cutouts(two_clips):
    cfg_path, _ = two_clips
    cfg = load_config(cfg_path)
    cache = ModelCache(cfg.models.model_copy(update={"max_loaded": 3}))
    folder = cfg_path.parent / "models"
    a = {"clip_config": str(folder / "tiny_clip.json"), "clip_checkpoint": str(folder / "tiny_clip.safetensors")}
    b = {"clip_config": str(folder / "tiny_clip_48.json"), "clip_checkpoint": str(folder / "tiny_clip_48.safetensors")}
    base = Request.from_config(cfg, prompt="a red apple|green:-0.5", seed=3, z_l2_weight=0.0)
    duo_req = base.with_changes(models={**base.models.model_dump(), **a, "more_clips": [b], "clip_weights": [0.25, 2.0]})
    only_b = base.with_changes(models={**base.models.model_dump(), **b})
    duo, one_a, one_b = (cache.get(r.models) for r in (duo_req, base, only_b))
    assert [c.size for c, _ in duo.clips()] == [32, 48]
    run, run_a, run_b = Run(duo, prepare(duo, duo_req)), Run(one_a, prepare(one_a, base)), Run(one_b, prepare(one_b, only_b))
    with torch.no_grad():
        image = synth(duo, run.z)
        cuts = run.cutouts(image)
        assert [c.shape[-1] for c in cuts] == [32, 48]  # each model its own input size
        embeds = [clip.encode_image(c).float() for (clip, _), c in zip(duo.clips(), cuts, strict=True)]
        together = run.loss(embeds)
        alone = 0.25 * run_a.loss(embeds[:1]) + 2.0 * run_b.loss(embeds[1:])
    assert float(together) == pytest.approx(float(alone), rel=1e-5)
    assert float(run_a.loss(embeds[:1])) != pytest.approx(float(run_b.loss(embeds[1:])))  # not a trivial sum


def test_unknown_models_are_refused_with_one_line_naming_the_choices(two_clips, tmp_path, capsys):
    cfg, _ = two_clips
    for flags, words in ((["--clip-model", "NoSuchNet", "--clip-pretrained", "openai"], "unknown CLIP model 'NoSuchNet'"),
                         (["--clip-model", "ViT-B-32", "--clip-pretrained", "nosuchtag"], "available tags for ViT-B-32"),
                         (["--vqgan", "no_such_vqgan"], "unknown VQGAN preset 'no_such_vqgan'")):
        code = main(["imagine", "x", "-o", str(tmp_path / "x.png"), "--config", str(cfg), *flags])
        err = capsys.readouterr().err
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    code = main(["imagine", "x", "-o", str(tmp_path / "x.png"), "--config", str(cfg), "--clip-weight", "1",
                 "--clip-weight", "2"])
    assert code == 2 and "once per CLIP model" in capsys.readouterr().err


def test_a_request_may_pick_only_the_offered_models(tmp_path):
    cfg = load_config(write_tiny_config(tmp_path, models={
        "vqgan": "imagenet_f16_16384", "vqgan_choices": ["wikiart_16384"],
        "clip_choices": ["ViT-B-16/openai", "ViT-B-32/openai+RN50/openai"]}))
    spec = cfg.models.spec()
    duo = with_choices(spec, cfg.models, vqgan="wikiart_16384", clip="ViT-B-32/openai+RN50/openai")
    assert duo.vqgan == "wikiart_16384" and [c.choice() for c in duo.clips()] == ["ViT-B-32/openai", "RN50/openai"]
    with pytest.raises(UserError, match=r"unknown CLIP model 'RN101/openai'; available: .*ViT-B-16/openai"):
        with_choices(spec, cfg.models, clip="RN101/openai")
    with pytest.raises(UserError, match=r"unknown model 'vqgan_gumbel_f8'; available: imagenet_f16_16384, wikiart"):
        with_choices(spec, cfg.models, vqgan="vqgan_gumbel_f8")


def test_metadata_from_before_ensembles_keeps_its_one_clip_under_an_ensemble_config(tmp_path):
    from engine.models.trust import trusted_models

    b = write_tiny_clip_48(tmp_path / "models")
    path = write_tiny_config(tmp_path)
    path.write_text(path.read_text().replace("[models]\n", "[models]\nmore_clips = [{ clip_config = "
                                             f"'{b[0]}', clip_checkpoint = '{b[1]}' }}]\n"))
    cfg = load_config(path)
    old = {k: v for k, v in cfg.models.spec().model_dump(mode="json").items()
           if k not in ("more_clips", "clip_weights")}  # what an older version wrote
    models = trusted_models(old, cfg.models, source="old.png")
    assert models["more_clips"] == [] and models["clip_config"] == old["clip_config"]
    assert len(Request.from_config(cfg, prompt="x", models=models).models.clips()) == 1


def test_the_queue_batches_only_jobs_with_the_same_clip_models(tiny_cfg):
    from engine.spec.request import batch_key

    one = Request.from_config(tiny_cfg, prompt="x")
    extra = {"clip_model": "RN50", "clip_pretrained": "openai"}
    duo = one.with_changes(models={**one.models.model_dump(), "more_clips": [extra]})
    weighted = duo.with_changes(models={**duo.models.model_dump(), "clip_weights": [0.9, 0.1]})
    assert batch_key(one) == batch_key(one.with_changes(seed=1))
    assert len({batch_key(one), batch_key(duo), batch_key(weighted)}) == 3


def test_an_ensemble_tells_a_story_too(two_clips, tmp_path):
    cfg, flags = two_clips
    out = tmp_path / "story.png"
    assert main(["imagine", "a forest ^ ashes", "-o", str(out), "--steps", "4", "--config", str(cfg), *flags]) == 0
    req = read_metadata(out)["request"]
    assert req["prompt"] == "a forest ^ ashes" and len(req["models"]["more_clips"]) == 1


def _colour(channel: int):
    """A stub scorer whose answer is known: how much of one colour a crop holds."""
    def score(crops: torch.Tensor) -> torch.Tensor:
        return crops[:, channel].mean((1, 2)) - crops.mean((1, 2, 3))
    return score


def _sized(scorer, size: int):
    """The scorer, checking that it is shown crops at its own model's input size."""
    def score(crops: torch.Tensor) -> torch.Tensor:
        assert crops.shape[-2:] == (size, size), crops.shape
        return scorer(crops)
    return score


@pytest.mark.pixels
def test_an_ensemble_finds_the_region_with_every_clip_by_its_weight():
    from engine.method.region import Judge, ensemble_map, region_mask, score_map

    img = torch.zeros(1, 3, 64, 96)
    img[:, 2] = 0.8  # blue sky
    img[:, :, 16:48, 8:40] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # a red jacket on the left
    img[:, :, 16:48, 56:88] = torch.tensor([0.1, 0.9, 0.1])[:, None, None]  # a green hat on the right
    red, green = _sized(_colour(0), 16), _sized(_colour(1), 24)  # two models, two input sizes

    def mask(*judges: Judge) -> torch.Tensor:
        return region_mask(img, list(judges), n_crops=256)[0, 0]

    sees_red, sees_green = mask(Judge(red, 16, 1.0), Judge(green, 24, 0.0)), mask(Judge(red, 16, 0), Judge(green, 24, 1))
    assert torch.equal(sees_red, region_mask(img, [Judge(red, 16)], n_crops=256)[0, 0]), "weights 1/0: the first model alone"
    assert torch.equal(sees_green, region_mask(img, [Judge(green, 24)], n_crops=256)[0, 0]), "weights 0/1: the second alone"
    assert sees_red[16:48, 8:40].mean() > 0.8 and sees_red[16:48, 56:88].mean() < 0.05
    assert sees_green[16:48, 56:88].mean() > 0.8 and sees_green[16:48, 8:40].mean() < 0.05
    both = mask(Judge(red, 16, 0.5), Judge(green, 24, 0.5))
    assert both[16:48, 8:40].mean() > 0.6 and both[16:48, 56:88].mean() > 0.6 and both[:8].mean() < 0.05, "both found"
    # The map is the weighted mean of each model's own normalised map, over the same crops.
    together = ensemble_map(img, [Judge(red, 16, 3.0), Judge(green, 24, 1.0)], n_crops=64, generator_seed=7)
    alone = [score_map(img, s, size, 64, generator_seed=7) for s, size in ((red, 16), (green, 24))]
    assert torch.allclose(together, 0.75 * alone[0] + 0.25 * alone[1], atol=1e-6)


@pytest.mark.pixels
def test_an_edit_by_words_asks_every_clip_of_the_ensemble_and_one_clip_finds_what_it_found_before(two_clips, tmp_path):
    from engine.method.generate import to_tensor
    from engine.method.region import Judge, clip_scorer, region_mask

    cfg_path, flags = two_clips
    src = tmp_path / "me.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(src)
    a, b = flags[:4], flags[4:]

    def found(*models: str, name: str) -> np.ndarray:
        mask = tmp_path / f"{name}.png"
        assert main(["edit", str(src), "fur", "--region", "jacket", "--save-mask", str(mask), "--steps", "1",
                     "--seed", "2", "-o", str(tmp_path / f"{name}-out.png"), "--config", str(cfg_path), *models]) == 0
        return np.asarray(Image.open(mask)) > 127

    only_a, only_b = found(*a, name="a"), found(*b, name="b")
    assert not np.array_equal(only_a, only_b), "the two tiny CLIPs see the jacket in different places"
    assert np.array_equal(found(*flags, "--clip-weight", "1", "--clip-weight", "0", name="a0"), only_a)
    assert np.array_equal(found(*flags, "--clip-weight", "0", "--clip-weight", "1", name="b0"), only_b)
    duo = found(*flags, name="duo")
    assert 0 < duo.mean() < 1
    # One CLIP finds exactly the mask the single-model search found before ensembles.
    cfg = load_config(cfg_path)
    req = Request.from_config(cfg, prompt="fur", seed=2)
    clip = ModelCache(cfg.models).get(req.models).clip
    before = region_mask(to_tensor(Image.open(src).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS),
                                   torch.device("cpu")), [Judge(clip_scorer(clip, "jacket"), clip.size)],
                         n_crops=req.region_crops, threshold=req.region_threshold, seed=2)
    assert np.array_equal(only_a, before[0, 0].numpy() > 0.5)


def test_bench_times_a_step_of_the_ensemble_and_what_each_extra_clip_costs(two_clips, capsys):
    import json

    cfg, flags = two_clips
    assert main(["bench", "--config", str(cfg), *flags, "--clip-weight", "0.7", "--clip-weight", "0.3",
                 "--size", "32", "32", "--cutouts", "2", "--steps", "1", "--repeats", "1", "--warmup", "0",
                 "--jobs", "1", "--json"]) == 0
    out, err = capsys.readouterr()
    figures = json.loads(out)
    assert [m.rsplit("/", 1)[-1] for m in figures["clip_models"]] == ["tiny_clip.json", "tiny_clip_48.json"]
    assert figures["clip_weights"] == [0.7, 0.3] and "tiny_clip_48" in figures["models"]
    assert figures["ours_s_per_step"] > 0 and figures["first_clip_alone_s_per_step"] > 0
    assert figures["each_extra_clip_s_per_step"] == pytest.approx(
        figures["ours_s_per_step"] - figures["first_clip_alone_s_per_step"])
    assert "first CLIP alone" in err
    # A wrong number of weights, or an unknown model for random weights, is one line, before any timing.
    for extra, words in ((["--clip-weight", "1"], "once per CLIP model"),
                         (["--random-weights", "--clip-model", "NoSuchNet"], "unknown CLIP model 'NoSuchNet'")):
        assert main(["bench", "--config", str(cfg), *([] if "--random-weights" in extra else flags), *extra]) == 2
        err = capsys.readouterr().err
        assert words in err and len(err.strip().splitlines()) == 2 and "bench: loading" in err, err
