"""The method's pieces, each checked against what the paper says it should do."""

from __future__ import annotations

import math

import pytest
import torch
import yaml

from engine.config import load_config
from engine.errors import ConfigError, UserError
from engine.method.cutouts import make_augment, make_cutouts, random_boxes
from engine.method.losses import Targets, prompt_loss, z_l2
from engine.method.masks import feather, latent_mask
from engine.method.ops import clamp_with_grad, spherical_dist, vector_quantize
from engine.models.clip import load_clip_files
from engine.models.vqgan import load_vqgan
from engine.spec.prompts import Prompt, parse_prompts
from engine.spec.request import Request
from tests.tinymodels import VQGAN_CONFIG, write_tiny_clip


def test_prompt_syntax_weights_stops_and_colons():
    assert parse_prompts("a forest rendered in low poly") == [Prompt("a forest rendered in low poly")]
    assert parse_prompts("a:1|b:-0.5") == [Prompt("a", 1.0), Prompt("b", -0.5)]
    assert parse_prompts("sky:2:0.8") == [Prompt("sky", 2.0, 0.8)]
    assert parse_prompts("see http://x.org/a:0.5") == [Prompt("see http://x.org/a", 0.5)]
    assert parse_prompts("ratio 16:9 poster") == [Prompt("ratio 16:9 poster")]
    for bad in ("", "   ", "|", ":1", "a:0"):
        with pytest.raises(UserError):
            parse_prompts(bad)


def test_config_unknown_key_and_wrong_type_name_the_key_and_file(tmp_path):
    p = tmp_path / "config.toml"
    p.write_text("[generation]\nstepz = 3\n")
    with pytest.raises(ConfigError, match=r"config.toml: generation.stepz: unknown key"):
        load_config(p)
    p.write_text('[generation]\nsteps = "many"\n')
    with pytest.raises(ConfigError, match=r"config.toml: generation.steps: "):
        load_config(p)
    p.write_text("[bogus]\nx = 1\n")
    with pytest.raises(ConfigError, match="bogus: unknown key"):
        load_config(p)


def test_shipped_config_toml_documents_every_setting_at_its_default():
    import tomllib

    from bot.config import BotConfig, load_bot_config

    written = tomllib.loads(open("config.toml", encoding="utf-8").read())
    for section, values in BotConfig().model_dump().items():
        assert set(values) == set(written[section]), f"[{section}] in config.toml lists every key"
    assert load_bot_config("config.toml") == BotConfig()


@pytest.mark.pixels
def test_spherical_distance_is_zero_for_same_and_grows_with_angle():
    x = torch.tensor([[1.0, 0.0]])
    assert spherical_dist(x, x).item() == pytest.approx(0, abs=1e-6)
    # 90 degrees apart: 2 * (pi/4)^2
    assert spherical_dist(x, torch.tensor([[0.0, 3.0]])).item() == pytest.approx(2 * (math.pi / 4) ** 2, rel=1e-5)


@pytest.mark.pixels
def test_negative_weight_pushes_away_and_stop_ends_the_pull():
    img = torch.tensor([[1.0, 0.2]], requires_grad=True)
    target = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0]]), dim=-1)
    for weight, descent_moves_y in ((1.0, "down"), (-1.0, "up")):
        img.grad = None
        prompt_loss(img, Targets(target, torch.tensor([weight]), torch.tensor([-math.inf]))).backward()
        # gradient descent moves y against the gradient: towards the target (0) for a pull, away for a push
        assert ("down" if img.grad[0, 1] > 0 else "up") == descent_moves_y
    img.grad = None
    prompt_loss(img, Targets(target, torch.tensor([1.0]), torch.tensor([1.0]))).backward()
    assert img.grad.abs().sum() == 0, "below the stop distance the prompt no longer pulls"


@pytest.mark.pixels
def test_z_l2_decays_over_the_run():
    z = torch.ones(1, 2, 2, 2)
    assert z_l2(z, 0.1, 0.005, 0).item() == pytest.approx(0.1)
    assert z_l2(z, 0.1, 0.005, 400).item() == pytest.approx(0.1 * 0.995**400)


@pytest.mark.pixels
def test_straight_through_quantizer_snaps_forward_and_passes_gradient():
    book = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[[[0.2]], [[0.1]]], [[[0.9]], [[0.7]]]]).reshape(2, 2, 1, 1).requires_grad_()
    zq = vector_quantize(z, book)
    assert torch.equal(zq.detach().flatten(1), torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
    zq.sum().backward()
    assert torch.equal(z.grad, torch.ones_like(z))


@pytest.mark.pixels
def test_clamp_with_grad_lets_clamped_pixels_come_back():
    x = torch.tensor([1.5, -0.5, 0.5], requires_grad=True)
    y = clamp_with_grad(x, 0, 1)
    assert y.tolist() == [1.0, 0.0, 0.5]
    (y * torch.tensor([1.0, 1.0, 1.0])).sum().backward()  # gradient +1: descent lowers x
    assert x.grad.tolist() == [1.0, 0.0, 1.0]  # 1.5 may move down, -0.5 may not move further down


@pytest.mark.pixels
def test_cutouts_are_batched_sized_and_augmented():
    torch.manual_seed(0)
    boxes = random_boxes(64, 40, 60, cut_size=16, cut_pow=1.0)
    sides = boxes[:, 2] - boxes[:, 0]
    assert torch.equal(sides, boxes[:, 3] - boxes[:, 1]) and sides.min() >= 16 and sides.max() <= 40
    assert (boxes[:, 2] <= 60).all() and (boxes[:, 3] <= 40).all() and (boxes[:, :2] >= 0).all()
    big_pow = random_boxes(256, 40, 60, 16, cut_pow=3.0)
    assert (big_pow[:, 2] - big_pow[:, 0]).float().mean() < sides.float().mean()
    img = torch.rand(1, 3, 40, 60, requires_grad=True)
    cuts = make_cutouts(img, 8, 16, augment=make_augment(0.1))
    assert cuts.shape == (8, 3, 16, 16)
    cuts.sum().backward()
    assert img.grad.abs().sum() > 0


@pytest.mark.pixels
def test_masks_cover_touched_cells_and_feather_ends_exactly():
    m = torch.zeros(1, 1, 32, 32)
    m[..., 0:5, 0:5] = 1
    assert latent_mask(m, 16)[0, 0].tolist() == [[1.0, 0.0], [0.0, 0.0]]
    soft = feather(m, 3)
    assert soft[0, 0, 0, 0] == 1 and soft[0, 0, 0, 5] > 0 and soft[0, 0, 0, 7] > 0
    assert soft[0, 0, 0, 8] == 0 and soft[0, 0, 9:, :].abs().sum() == 0


def test_gumbel_vqgan_loads_from_its_yaml(tmp_path):
    cfg = yaml.safe_load(yaml.safe_dump(VQGAN_CONFIG))
    cfg["model"]["target"] = "taming.models.vqgan.GumbelVQ"
    cfg["model"]["params"]["ddconfig"]["z_channels"] = 8
    from engine.models.vqgan import vqgan_from_config

    model = vqgan_from_config(cfg)
    sd = {k: v for k, v in model.state_dict().items()}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(cfg))
    torch.save({"state_dict": sd}, tmp_path / "g.ckpt")
    loaded = load_vqgan(tmp_path / "g.yaml", tmp_path / "g.ckpt")
    assert loaded.gumbel and loaded.codebook.shape == (64, 8)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    assert loaded.decode(vector_quantize(loaded.encode(x), loaded.codebook)).shape == (1, 3, 32, 32)


def test_vqgan_checkpoint_that_does_not_match_is_a_clear_error(tmp_path, tiny_cfg):
    torch.save({"state_dict": {"encoder.conv_in.weight": torch.zeros(1)}}, tmp_path / "bad.ckpt")
    with pytest.raises(UserError, match="does not match"):
        load_vqgan(tiny_cfg.models.vqgan_config, tmp_path / "bad.ckpt")


@pytest.mark.pixels
def test_clip_from_config_json_and_pt_state_dict(tmp_path):
    json_path, st_path = write_tiny_clip(tmp_path)
    from safetensors.torch import load_file

    torch.save(load_file(st_path), tmp_path / "tiny.pt")
    a = load_clip_files(json_path, st_path)
    b = load_clip_files(json_path, tmp_path / "tiny.pt")
    t = a.encode_text(["a red apple", "a blue car"])
    assert t.shape == (2, 32) and torch.allclose(t.norm(dim=-1), torch.ones(2))
    assert torch.allclose(t, b.encode_text(["a red apple", "a blue car"]))
    assert a.encode_image(torch.rand(3, 3, 32, 32)).shape == (3, 32)


def test_models_load_once_and_the_least_recently_used_is_dropped(tiny_cfg, tmp_path):
    from engine.models.loader import ModelCache
    from engine.spec.request import ModelSpec

    other_json, other_weights = write_tiny_clip(tmp_path / "other", seed=1)
    cache = ModelCache(tiny_cfg.models.model_copy(update={"max_loaded": 1}))
    base = _models_of(tiny_cfg)
    other = ModelSpec(**{**base.model_dump(), "clip_config": str(other_json), "clip_checkpoint": str(other_weights)})
    first = cache.get(base)
    assert cache.get(base).clip is first.clip, "a second job with the same models reuses them"
    second = cache.get(other)
    assert second.clip is not first.clip and second.vqgan is first.vqgan
    assert cache.get(base).clip is not first.clip, "max_loaded=1: the first CLIP was dropped and reloaded"


def _models_of(cfg):
    from engine.spec.request import Request

    return Request.from_config(cfg, prompt="x").models


def test_a_config_value_no_request_could_use_is_refused_when_the_config_is_read(tmp_path):
    # config.toml and requests share one set of bounds: an owner learns at start, not on every job.
    p = tmp_path / "config.toml"
    p.write_text("[generation]\nlr = 20.0\n")
    with pytest.raises(ConfigError, match=r"^.*config.toml: generation.lr: must be at most 10$"):
        load_config(p)
    p.write_text("[editing]\nfeather = 5000\n")
    with pytest.raises(ConfigError, match=r"config.toml: editing.feather: must be at most 1024$"):
        load_config(p)
    p.write_text('[models]\nvqgan_config = ""\nclip_pretrained = ""\n')  # TOML has no null: "" is unset
    spec = Request.from_config(load_config(p), prompt="x").models
    assert (spec.vqgan_config, spec.clip_pretrained) == (None, None)
