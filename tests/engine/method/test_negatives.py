"""What a prompt's parameters ask of the method (tiny models, no steps): ``--no`` texts are targets of
weight -1 in every part of a story, and pictures alone (a blend without words) are targets enough."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from engine.method.generate import prepare
from engine.models.loader import ModelCache
from engine.spec.request import Request


@pytest.fixture(scope="module")
def models(tiny_cfg):
    return ModelCache(tiny_cfg.models).get(Request.from_config(tiny_cfg, prompt="x").models)


@pytest.mark.pixels
def test_negatives_are_targets_of_weight_minus_one_in_every_part(tiny_cfg, models):
    req = Request.from_config(tiny_cfg, prompt="a red apple|green:0.5 ^ ashes", negative=("people", "text"), seed=1)
    inputs = prepare(models, req)
    first, second = inputs.story
    assert first.weights.tolist() == [1.0, 0.5, -1.0, -1.0]
    assert second.weights.tolist() == [1.0, -1.0, -1.0]
    with torch.no_grad():
        people = models.clip.encode_text(["people"])[0]
    assert torch.allclose(second.embeds[1], people.reshape(-1).to(second.embeds), atol=1e-5)


def test_pictures_alone_are_the_targets_of_a_blend_without_words(tiny_cfg, models, tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.new("RGB", (16, 16), (200, 0, 0)).save(a)
    Image.new("RGB", (16, 16), (0, 0, 200)).save(b)
    req = Request.from_config(tiny_cfg, prompt="", seed=2,
                              image_prompts=[{"path": str(a)}, {"path": str(b), "weight": 2.0}])
    assert req.prompt == ""
    assert prepare(models, req).targets.weights.tolist() == [1.0, 2.0]
