"""Small differentiable helpers of the method (pure functions, k-diffusion style).

- ``vector_quantize``: nearest codebook entry with a straight-through gradient (paper 2.1).
- ``clamp_with_grad``: clamp to a range, but let gradients through that point back inside,
  so pixels pinned at 0 or 1 can still move.
- ``spherical_dist``: squared great-circle distance between unit vectors (paper 2, the loss).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F


def replace_grad(forward: torch.Tensor, backward: torch.Tensor) -> torch.Tensor:
    """Value of ``forward``, gradient of ``backward``."""
    return backward + (forward - backward).detach()


def vector_quantize(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Snap each latent vector of ``z`` (B, C, H, W) to its nearest codebook row (K, C)."""
    zf = z.movedim(1, -1)
    d = zf.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(1) - 2 * zf @ codebook.T
    zq = F.embedding(d.argmin(-1), codebook)
    return replace_grad(zq, zf).movedim(-1, 1)


class _ClampWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        ctx.lo, ctx.hi = lo, hi
        ctx.save_for_backward(x)
        return x.clamp(lo, hi)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (x,) = ctx.saved_tensors
        # Pass a gradient unless it would push a clamped value further out of range.
        keep = (grad * (x - x.clamp(ctx.lo, ctx.hi)) >= 0)
        return grad * keep, None, None


def clamp_with_grad(x: torch.Tensor, lo: float = 0.0, hi: float = 1.0) -> torch.Tensor:
    return _ClampWithGrad.apply(x, lo, hi)


def spherical_dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared spherical distance between L2-normalised x and y (broadcasting, last dim)."""
    x = F.normalize(x, dim=-1)
    y = F.normalize(y, dim=-1)
    return (x - y).norm(dim=-1).div(2).arcsin().pow(2).mul(2)
