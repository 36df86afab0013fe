"""Editing by words: CLIP finds the region, structure is kept, collages made whole, variations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.cli import main
from engine.media.collage import assemble, build, left_to_right
from engine.media.imageio import read_metadata
from engine.method.generate import generate, to_tensor
from engine.method.ops import spherical_dist
from engine.method.region import Judge, region_mask, score_map
from engine.models.loader import ModelCache
from engine.spec.request import Request


def redness(crops: torch.Tensor) -> torch.Tensor:
    """A stub scorer whose answer is known: how red a crop is."""
    return crops[:, 0].mean((1, 2)) - crops[:, 1:].mean((1, 2, 3))


@pytest.mark.pixels
def test_region_mask_is_where_the_crops_score_higher():
    img = torch.zeros(1, 3, 64, 96)
    img[:, 2] = 0.8  # blue everywhere
    img[:, :, 16:48, 8:40] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]  # a red "jacket" on the left
    scores = score_map(img, redness, crop_size=16, n_crops=256)
    assert scores[16:48, 8:40].mean() > 2 * scores[:, 60:].mean()
    mask = region_mask(img, [Judge(redness, 16)], n_crops=256, threshold=0.5)[0, 0]
    inside, outside = mask[16:48, 8:40].mean(), mask[:, 60:].mean()
    assert inside > 0.8 and outside < 0.05, (inside, outside)
    looser = region_mask(img, [Judge(redness, 16)], n_crops=256, threshold=-2.0)[0, 0]  # the paper's cut
    assert looser.sum() > mask.sum()


def _photo(path, w=64, h=64, seed=0):
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.pixels
def test_edit_region_from_a_phrase_end_to_end(tiny_config_path, tmp_path):
    src, out, mask = _photo(tmp_path / "me.png"), tmp_path / "fur.png", tmp_path / "mask.png"
    assert main(["edit", str(src), "fur", "--region", "jacket", "--save-mask", str(mask), "-o", str(out),
                 "--config", str(tiny_config_path), "--steps", "2"]) == 0
    m = np.asarray(Image.open(mask)) > 127
    assert m.shape == (64, 64) and 0 < m.mean() < 1
    assert read_metadata(out)["request"]["region"] == "jacket"
    changed = np.abs(np.asarray(Image.open(out)).astype(int) - np.asarray(Image.open(src)).astype(int)).sum(-1) > 0
    far = ~np.asarray(Image.fromarray(m.astype(np.uint8) * 255).resize((64, 64)).filter(
        __import__("PIL.ImageFilter", fromlist=["MaxFilter"]).MaxFilter(11))).astype(bool)
    assert not changed[far].any(), "pixels far from the found region are the input's"


def test_keep_structure_pulls_the_result_towards_the_original(tiny_cfg, tmp_path):
    models = ModelCache(tiny_cfg.models).get(Request.from_config(tiny_cfg, prompt="x").models)
    src = _photo(tmp_path / "src.png", 32, 32, seed=3)
    original = to_tensor(Image.open(src), models.device)

    def distance(weight: float) -> float:
        """Mean over seeds: one run of a tiny random CLIP is too noisy to judge alone."""
        found = []
        for seed in (1, 2, 3):
            req = Request.from_config(tiny_cfg, kind="edit", prompt="a bright neon sign", init_image=str(src),
                                      keep_structure=weight, keep_latent=0.0, seed=seed, steps=25, lr=0.3,
                                      cutouts=8, width=32, height=32)
            out = to_tensor(generate(models, req).image, models.device)
            with torch.no_grad():
                a, b = models.clip.encode_image(out), models.clip.encode_image(original)
            found.append(spherical_dist(a, b).item())
        return sum(found) / len(found)

    assert distance(20.0) < 0.75 * distance(0.0)


@pytest.mark.pixels
def test_collage_with_a_hole_changes_the_hole_and_keeps_the_rest(tiny_config_path, tmp_path):
    left = Image.new("RGB", (32, 64), (200, 40, 40))
    right = Image.new("RGB", (32, 64), (40, 40, 200))
    canvas, mask = build([(left, (0, 0)), (right, (64, 0))], size=(96, 64), seam=4)
    m = np.asarray(mask) > 127
    assert m[:, 32:64].all(), "the uncovered middle is repainted"
    assert m[:, 28:68].all() and not m[:, :28].any() and not m[:, 68:].any(), "4 pixels each side too, the rest not"
    base = tmp_path / "holes.png"
    rgba = Image.new("RGBA", (96, 64), (0, 0, 0, 0))
    rgba.paste(left, (0, 0))
    rgba.paste(right, (64, 0))
    rgba.save(base)
    out = tmp_path / "whole.png"
    assert main(["edit", str(base), "a bridge between two towers", "-o", str(out), "--seam", "4",
                 "--config", str(tiny_config_path), "--steps", "2"]) == 0
    got = np.asarray(Image.open(out)).astype(int)
    want = np.asarray(rgba.convert("RGB")).astype(int)
    assert (np.abs(got[:, 40:56] - want[:, 40:56]).sum(-1) > 0).mean() > 0.5, "the hole was painted"
    feather = 4
    assert np.array_equal(got[:, : 28 - feather], want[:, : 28 - feather])
    assert np.array_equal(got[:, 68 + feather :], want[:, 68 + feather :])  # the seam ends at 67
    assert (tmp_path / "whole-collage-mask.png").exists()


@pytest.mark.pixels
def test_a_transparent_hole_changes_no_pixel_beyond_hole_seam_and_feather(tiny_config_path, tmp_path):
    """The issue's case: a 64x64 picture with a transparent 32x32 hole at 16..47, seam 8 and feather 4
    (the defaults): rows and columns 4..59 may change, and every pixel beyond them is the input's."""
    rng = np.random.default_rng(3)
    rgba = np.concatenate([rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), np.full((64, 64, 1), 255, np.uint8)], -1)
    rgba[16:48, 16:48, 3] = 0
    src, out = tmp_path / "holed.png", tmp_path / "filled.png"
    Image.fromarray(rgba, "RGBA").save(src)
    assert main(["edit", str(src), "a window onto the sea", "-o", str(out), "--size", "64", "64", "--steps", "2",
                 "--config", str(tiny_config_path)]) == 0
    seam, feather = 8, 4
    repainted = np.zeros((64, 64), bool)
    repainted[16 - seam : 48 + seam, 16 - seam : 48 + seam] = True
    assert np.array_equal(np.asarray(Image.open(tmp_path / "filled-collage-mask.png")) > 127, repainted), \
        "the hole and 8 pixels around it, no more"
    may_change = np.zeros((64, 64), bool)
    may_change[16 - seam - feather : 48 + seam + feather, 16 - seam - feather : 48 + seam + feather] = True
    got, want = np.asarray(Image.open(out).convert("RGB")), rgba[..., :3]
    assert np.array_equal(got[~may_change], want[~may_change]), "bit for bit the input beyond the feathered edge"
    assert (got[16:48, 16:48] != want[16:48, 16:48]).any(-1).mean() > 0.5, "the hole was painted"


def test_paste_builds_a_collage_and_left_to_right_lays_out_pieces(tiny_config_path, tmp_path):
    base, piece = _photo(tmp_path / "base.png", 64, 64), tmp_path / "cat.png"
    Image.new("RGB", (16, 16), (250, 250, 0)).save(piece)
    out = tmp_path / "o.png"
    assert main(["edit", str(base), "a cat on a sofa", "--paste", f"{piece}@16,16", "-o", str(out),
                 "--config", str(tiny_config_path), "--steps", "1"]) == 0
    assert Image.open(out).size == (64, 64)
    pieces = left_to_right([Image.new("RGB", (20, 10)), Image.new("RGB", (10, 20))], height=20)
    assert [(im.size, xy) for im, xy in pieces] == [((40, 20), (0, 0)), ((10, 20), (40, 0))]


def test_a_variation_names_its_parent_and_a_new_seed(tiny_config_path, tmp_path):
    parent, child = tmp_path / "parent.png", tmp_path / "child.png"
    assert main(["imagine", "a castle on a hill", "-o", str(parent), "--seed", "11", "--steps", "10",
                 "--config", str(tiny_config_path)]) == 0
    assert main(["vary", str(parent), "-o", str(child), "--seed", "12", "--config", str(tiny_config_path)]) == 0
    req = read_metadata(child)["request"]
    assert req["kind"] == "vary" and req["prompt"] == "a castle on a hill"
    assert req["seed"] == 12 and req["steps"] == 3  # 0.3 of the parent's 10
    assert req["parent"].startswith("sha256:") and "seed:11" in req["parent"]
    assert req["keep_structure"] > 0
    a, b = np.asarray(Image.open(parent)), np.asarray(Image.open(child))
    assert a.shape == b.shape and not np.array_equal(a, b)


def test_vary_takes_size_and_steps_like_every_other_subcommand(tiny_config_path, tmp_path, capsys):
    # vary once crashed with a traceback on --size (two values for the width); its flags now go on top.
    parent, child = tmp_path / "parent.png", tmp_path / "child.png"
    assert main(["imagine", "a lighthouse", "-o", str(parent), "--seed", "1", "--steps", "2",
                 "--config", str(tiny_config_path)]) == 0
    assert main(["vary", str(parent), "-o", str(child), "--size", "48", "32", "--steps", "2", "--keep-latent", "0",
                 "--config", str(tiny_config_path)]) == 0
    req = read_metadata(child)["request"]
    assert (req["width"], req["height"], req["steps"], req["keep_latent"]) == (48, 32, 2, 0)
    assert Image.open(child).size == (48, 32)
    capsys.readouterr()
    assert main(["vary", str(parent), "-o", str(child), "--steps", "0", "--config", str(tiny_config_path)]) == 2
    assert capsys.readouterr().err.strip() == "error: steps: must be at least 1"


def test_one_assembly_for_pasted_pieces_and_transparent_holes():
    # The CLI (--paste, a transparent input) and the bot (uploads) both put pictures together with assemble().
    opaque = Image.new("RGB", (32, 32), (200, 10, 10))
    assert assemble([], seam=2, base=opaque) is None, "one opaque picture is edited as it is"
    holed = Image.new("RGBA", (32, 32), (10, 200, 10, 255))
    holed.paste((0, 0, 0, 0), (0, 0, 8, 32))
    canvas, mask = assemble([], seam=0, base=holed)
    assert np.asarray(mask)[:, :8].min() == 255 and np.asarray(mask)[:, 8:].max() == 0  # seam 0: the hole alone
    canvas, mask = assemble(left_to_right([opaque, opaque]), seam=1)
    assert canvas.size == (64, 32) and np.asarray(mask)[:, 31:33].min() == 255, "the seam between them is repainted"
    assert np.asarray(mask)[:, :31].max() == 0 and np.asarray(mask)[:, 33:].max() == 0, "one pixel each side"
