"""The objective: prompts as targets on CLIP's sphere, plus regularisation of z.

Every target (a text, an image prompt, the original image when keeping structure) is one row
of ``Targets``: an embedding, a weight (negative pushes away) and a stop distance below which
it no longer pulls. Their losses are summed (prompt addition, paper G.1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.method.ops import replace_grad, spherical_dist


@dataclass
class Targets:
    embeds: torch.Tensor  # (P, D), unit length
    weights: torch.Tensor  # (P,)
    stops: torch.Tensor  # (P,)

    @staticmethod
    def stack(rows: list[tuple[torch.Tensor, float, float]], device: torch.device) -> Targets:
        embeds = torch.stack([e.reshape(-1) for e, _, _ in rows]).to(device)
        weights = torch.tensor([w for _, w, _ in rows], device=device, dtype=torch.float32)
        stops = torch.tensor([s for _, _, s in rows], device=device, dtype=torch.float32)
        return Targets(embeds, weights, stops)


def prompt_loss(image_embeds: torch.Tensor, targets: Targets) -> torch.Tensor:
    """Sum over targets of |w| * mean over cutouts of sign(w) * d(cutout, target)^2."""
    d = spherical_dist(image_embeds[:, None, :], targets.embeds[None, :, :])  # (N, P)
    d = d * targets.weights.sign()
    d = replace_grad(d, torch.maximum(d, targets.stops))
    return (targets.weights.abs() * d.mean(0)).sum()


def z_l2(z: torch.Tensor, weight: float, decay: float, step: int) -> torch.Tensor:
    """alpha_t * mean(z^2), alpha_t = weight * (1 - decay)^step (paper 2.4: the weight decays)."""
    return (weight * (1.0 - decay) ** step) * z.pow(2).mean()


def latent_anchor(z: torch.Tensor, z0: torch.Tensor, weight: float) -> torch.Tensor:
    """StyleCLIP's lambda_L2: stay near the starting latent when editing."""
    return weight * (z - z0).pow(2).mean()
