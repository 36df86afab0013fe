"""Why a tiled picture has no seam: with the VQGAN's convolutions wrapping around, moving the latent by k
cells moves the picture by k x factor pixels, exactly, in the tiled directions (and only in those)."""

from __future__ import annotations

import pytest
import torch

from engine.models.tiling import tiled
from engine.models.vqgan import load_vqgan
from tests.tinymodels import write_tiny_vqgan

TOL = 1e-4  # float rounding (group norms and attention sum in another order); a seam is of order 1


@pytest.fixture(scope="module")
def vqgan(tmp_path_factory):
    return load_vqgan(*write_tiny_vqgan(tmp_path_factory.mktemp("tiling")))


@pytest.mark.pixels
@torch.no_grad()
def test_decoding_a_rolled_latent_gives_the_picture_rolled_by_cells_in_the_tiled_directions_only(vqgan):
    f = vqgan.factor
    z = torch.randn(1, vqgan.embed_dim, 6, 10, generator=torch.Generator().manual_seed(0))
    plain = vqgan.decode(z)
    k = 3  # cells

    def decode_rolled(dim: int) -> float:
        return float((vqgan.decode(torch.roll(z, k, dim)) - torch.roll(vqgan.decode(z), k * f, dim)).abs().max())

    with tiled(vqgan, "xy"):
        assert decode_rolled(3) < TOL and decode_rolled(2) < TOL
    with tiled(vqgan, "x"):
        assert decode_rolled(3) < TOL
        assert decode_rolled(2) > 0.05  # top and bottom stay edges: a vertical roll does not commute
    assert decode_rolled(3) > 0.05  # untiled, neither does a horizontal one
    assert torch.equal(vqgan.decode(z), plain)  # leaving the `with` restored the model


@pytest.mark.pixels
@torch.no_grad()
def test_encoding_a_rolled_picture_gives_the_latent_rolled_when_tiled(vqgan):
    """Edits of a tile start from its encoding: the encoder wraps around too (its Downsample included)."""
    f = vqgan.factor
    img = torch.rand(1, 3, 8 * f, 12 * f, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def encode_rolled(dim: int) -> float:
        return float((vqgan.encode(torch.roll(img, 2 * f, dim)) - torch.roll(vqgan.encode(img), 2, dim)).abs().max())

    with tiled(vqgan, "xy"):
        assert encode_rolled(3) < TOL and encode_rolled(2) < TOL
    with tiled(vqgan, "x"):
        assert encode_rolled(3) < TOL and encode_rolled(2) > 0.05
