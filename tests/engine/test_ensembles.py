"""Several CLIP models guiding one picture (an ensemble), and choosing models per request."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.__main__ import main
from engine.choices import with_choices
from engine.config import load_config
from engine.errors import UserError
from engine.generate import Run, prepare, synth
from engine.imageio import read_metadata
from engine.models.loader import ModelCache
from engine.request import Request
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
    from engine.request import trusted_models

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
    from engine.worker import batch_key

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
