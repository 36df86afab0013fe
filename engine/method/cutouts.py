"""Random cutouts of the candidate image, augmented as one batch (paper 2.3).

All N crops come out of one ``roi_align`` call: each crop is area-averaged down to CLIP's input
size (``sampling_ratio`` adapts to the crop), which avoids the aliasing of plain bilinear
resizing without a per-cutout Python loop; ``aligned=True`` puts the samples on pixel centres
(without it every cutout is shifted by half a pixel and blurred). The augmentations (flip,
affine, perspective, colour jitter, Gaussian noise) are one kornia pipeline applied to the
whole batch.
"""

from __future__ import annotations

import kornia.augmentation as K
import torch
from torch import nn
from torchvision.ops import roi_align


def make_augment(noise: float = 0.1) -> nn.Module:
    """The paper's augmentation pipeline, batched; random parameters come from torch's RNG."""
    steps: list[K.AugmentationBase2D] = [
        K.RandomHorizontalFlip(p=0.5),
        K.RandomAffine(degrees=15, translate=(0.1, 0.1), p=0.7, padding_mode="border"),
        K.RandomPerspective(distortion_scale=0.7, p=0.7),
        K.ColorJitter(brightness=0.1, contrast=0.1, saturation=0.1, hue=0.1, p=0.7),
    ]
    if noise > 0:
        steps.append(K.RandomGaussianNoise(mean=0.0, std=noise, p=0.5))
    return K.AugmentationSequential(*steps)


def random_boxes(n: int, height: int, width: int, cut_size: int, cut_pow: float = 1.0,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """N square crop boxes (x1, y1, x2, y2); side = rand**cut_pow * (max - min) + min."""
    max_size = min(width, height)
    min_size = min(width, height, cut_size)
    sizes = (torch.rand(n, device=device) ** cut_pow * (max_size - min_size) + min_size).floor()
    x1 = (torch.rand(n, device=device) * (width - sizes + 1)).floor()
    y1 = (torch.rand(n, device=device) * (height - sizes + 1)).floor()
    return torch.stack([x1, y1, x1 + sizes, y1 + sizes], dim=1)


def cutouts(image: torch.Tensor, boxes: torch.Tensor, cut_size: int) -> torch.Tensor:
    """Crop ``boxes`` out of ``image`` (1, C, H, W) and resize each to cut_size: (N, C, S, S)."""
    rois = torch.cat([boxes.new_zeros(len(boxes), 1), boxes], dim=1)
    return roi_align(image, rois.to(image.dtype), output_size=cut_size, sampling_ratio=-1, aligned=True)


def random_roll(image: torch.Tensor, tile: str) -> torch.Tensor:
    """A seamless tile rolled by a random offset (torch's RNG: the run's own) in its tiled directions
    ("x": across, "xy": both), so that the cutouts see its wrap-around seam as often as its middle."""
    _, _, h, w = image.shape
    dx = int(torch.randint(w, ()))
    dy = int(torch.randint(h, ())) if tile == "xy" else 0
    return torch.roll(image, (dy, dx), (2, 3))


def make_cutouts(image: torch.Tensor, n: int, cut_size: int, cut_pow: float = 1.0,
                 augment: nn.Module | None = None) -> torch.Tensor:
    """N random, augmented cutouts of a (1, C, H, W) image in [0, 1]."""
    _, _, h, w = image.shape
    batch = cutouts(image, random_boxes(n, h, w, cut_size, cut_pow, image.device), cut_size)
    return augment(batch) if augment is not None else batch
