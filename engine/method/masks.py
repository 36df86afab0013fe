"""Masks for editing (Paint by Word): which latent cells may change, and the final composite.

A pixel mask (1 = change) becomes a latent mask by max-pooling over each VQGAN cell, so any
touched cell is editable. The decoder spreads a changed cell a little beyond it, so the final
image is a composite: the generated pixels inside the mask, a feathered ramp of ``feather``
pixels outside it, and the input's own pixels, untouched, everywhere else.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def latent_mask(mask: torch.Tensor, factor: int) -> torch.Tensor:
    """(1, 1, H, W) in [0, 1] -> (1, 1, H/f, W/f) binary: 1 where any pixel of the cell is set."""
    return (F.max_pool2d(mask, factor) > 0.5).to(mask.dtype)


def feather(mask: torch.Tensor, radius: int) -> torch.Tensor:
    """Soft mask: 1 inside, ramping to 0 over ``radius`` pixels outside, exactly 0 beyond."""
    if radius <= 0:
        return (mask > 0.5).to(mask.dtype)
    grown = (mask > 0.5).to(mask.dtype)
    acc = grown.clone()
    for _ in range(radius):
        grown = F.max_pool2d(grown, 3, stride=1, padding=1)
        acc = acc + grown
    # Inside: radius+1 hits -> 1. At distance k (1..radius): radius+1-k hits. Beyond: 0.
    return acc / (radius + 1)


def composite(original: torch.Tensor, generated: torch.Tensor, soft: torch.Tensor) -> torch.Tensor:
    """Blend; where ``soft`` is 0 the result *is* the original (bit for bit)."""
    blended = original * (1 - soft) + generated * soft
    return torch.where(soft > 0, blended, original)
