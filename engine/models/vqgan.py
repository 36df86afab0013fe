"""VQGAN built from ``taming.modules`` parts, loaded from a taming YAML + Lightning ``.ckpt``.

``taming.models`` imports ``taming.main`` and pytorch_lightning (broken against current
versions) and instantiates the training loss, which downloads LPIPS/VGG weights. We need none
of that to *use* a VQGAN: the module below has the same attribute names as taming's
``VQModel``/``GumbelVQ`` so the checkpoint's keys load as they are, and ``loss.*`` keys are dropped.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import taming.modules.diffusionmodules.model as _taming_model
import torch
from omegaconf import OmegaConf
from taming.modules.diffusionmodules.model import Decoder, Encoder
from taming.modules.vqvae.quantize import GumbelQuantize, VectorQuantizer2
from torch import nn

from engine.errors import ModelFileMissing, UserError
from engine.models.checkpoint import load_checkpoint

log = logging.getLogger(__name__)

_TARGETS = {"VQModel": False, "GumbelVQ": True}
# taming's Decoder prints its z shape on construction; silence that module only (redirecting
# sys.stdout would swallow other threads' output while a model loads).
_taming_model.print = lambda *args, **kwargs: None


class VQGAN(nn.Module):
    """Encoder -> quant_conv -> (quantize) -> post_quant_conv -> Decoder, images in [-1, 1]."""

    def __init__(self, ddconfig: dict[str, Any], n_embed: int, embed_dim: int, gumbel: bool = False) -> None:
        super().__init__()
        self.gumbel = gumbel
        self.encoder = Encoder(**ddconfig)
        self.decoder = Decoder(**ddconfig)
        if gumbel:
            self.quantize = GumbelQuantize(ddconfig["z_channels"], embed_dim, n_embed=n_embed)
        else:
            self.quantize = VectorQuantizer2(n_embed, embed_dim, beta=0.25)
        self.quant_conv = nn.Conv2d(ddconfig["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, ddconfig["z_channels"], 1)
        self.factor = 2 ** (len(ddconfig["ch_mult"]) - 1)
        self.embed_dim = embed_dim
        self.n_embed = n_embed

    @property
    def codebook(self) -> torch.Tensor:
        """The (n_embed, embed_dim) table the latent is snapped to."""
        return self.quantize.embed.weight if self.gumbel else self.quantize.embedding.weight

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Image in [-1, 1] -> latent z whose nearest codebook rows are the model's own codes.

        A VQ model's codes are the nearest ``embedding`` rows of ``quant_conv(encoder(x))``, so
        that continuous latent is returned as it is. A Gumbel model's codes are
        ``argmax(proj(h))``, and its ``embed`` rows live in another space than h, so the nearest
        row of h would be an unrelated code: it returns those codes' ``embed`` rows instead.
        """
        h = self.quant_conv(self.encoder(x))
        if not self.gumbel:
            return h
        codes = self.quantize.proj(h).argmax(1)  # the noise-free choice of GumbelQuantize
        return self.quantize.embed(codes).movedim(-1, 1)

    def decode(self, zq: torch.Tensor) -> torch.Tensor:
        """Quantised latent -> image in roughly [-1, 1]."""
        return self.decoder(self.post_quant_conv(zq))


def read_config(path: str | Path) -> dict[str, Any]:
    """A taming YAML as a plain dict; one ``UserError`` line if it is missing, not YAML or not a mapping."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileMissing(f"VQGAN config not found: {path}")
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    except Exception as e:  # junk, binary data, a web page: whatever the YAML parser says
        raise UserError(f"{path}: not a YAML file ({type(e).__name__})") from None
    if not isinstance(cfg, dict):
        raise UserError(f"{path}: not a taming VQGAN config (no model section)")
    return {str(k): v for k, v in cfg.items()}


def vqgan_from_config(config: dict[str, Any]) -> VQGAN:
    """Build an untrained VQGAN from a taming config dict (``model.target``, ``model.params``)."""
    try:
        target = str(config["model"]["target"]).rsplit(".", 1)[-1]
        params = config["model"]["params"]
        ddconfig = dict(params["ddconfig"])
        n_embed, embed_dim = int(params["n_embed"]), int(params["embed_dim"])
    except (KeyError, TypeError) as e:
        raise UserError(f"VQGAN config lacks {e}: expected model.target and model.params "
                        "(ddconfig, n_embed, embed_dim)") from None
    if target not in _TARGETS:
        raise UserError(f"VQGAN config target {target!r} is not supported (VQModel or GumbelVQ)")
    return VQGAN(ddconfig, n_embed, embed_dim, gumbel=_TARGETS[target])


def load_vqgan(config_path: str | Path, checkpoint_path: str | Path) -> VQGAN:
    """Load a VQGAN from a taming-style YAML and a Lightning-style checkpoint (never runs pickled code)."""
    config_path = Path(config_path)
    model = vqgan_from_config(read_config(config_path))
    ckpt = load_checkpoint(checkpoint_path)
    sd = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict):
        raise UserError(f"{checkpoint_path}: no state_dict in checkpoint")
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor) and not k.startswith("loss.")}
    try:
        missing, unexpected = model.load_state_dict(sd, strict=False)
    except RuntimeError as e:  # shape mismatches
        detail = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
        raise UserError(f"{checkpoint_path}: checkpoint does not match {config_path.name}: {detail}") from None
    if missing:
        raise UserError(f"{checkpoint_path}: checkpoint does not match {config_path.name}; "
                        f"missing {len(missing)} weights, e.g. {missing[0]}")
    if unexpected:
        log.warning("%s: ignored %d unexpected keys, e.g. %s", checkpoint_path, len(unexpected), unexpected[0])
    return model.eval().requires_grad_(False)
