"""CLIP finds the region itself (paper, appendix G.2): crop, score, record at the crop, normalise.

Many random square crops of the image are scored against a phrase in one batched CLIP pass
(``roi_align`` + chunks of ``batch`` crops). Each crop's score is added to every pixel it covers;
dividing by the coverage gives a per-pixel score map, normalised to [0, 1], smoothed, then
thresholded at ``mean + threshold * std`` (the paper uses ``threshold = -2``: two standard
deviations below the mean; our default is stricter, see config.toml).
The scorer is any ``crops -> scores`` function, so tests can inject one whose answer is known.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from engine.cutouts import cutouts

Scorer = Callable[[torch.Tensor], torch.Tensor]


def clip_scorer(clip, phrase: str) -> Scorer:
    """Cosine similarity of each crop's CLIP embedding with the phrase's (paper: f(i) . g(s_p))."""
    text = clip.encode_text([phrase])[0]

    def score(crops: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return clip.encode_image(crops) @ text

    return score


def score_map(image: torch.Tensor, scorer: Scorer, crop_size: int, n_crops: int = 128, batch: int = 64,
              min_frac: float = 0.2, max_frac: float = 0.6, generator_seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) -> (H, W): mean score of the crops covering each pixel, normalised to [0, 1]."""
    _, _, h, w = image.shape
    side = min(h, w)
    g = torch.Generator().manual_seed(generator_seed)
    sizes = (torch.rand(n_crops, generator=g) * (max_frac - min_frac) + min_frac) * side
    sizes = sizes.floor().clamp(min=4)
    x1 = (torch.rand(n_crops, generator=g) * (w - sizes + 1)).floor()
    y1 = (torch.rand(n_crops, generator=g) * (h - sizes + 1)).floor()
    boxes = torch.stack([x1, y1, x1 + sizes, y1 + sizes], 1).to(image.device)
    scores = torch.cat([scorer(cutouts(image, b, crop_size)) for b in boxes.split(batch)]).float()
    total = torch.zeros(h, w, device=image.device)
    cover = torch.zeros(h, w, device=image.device)
    for (bx1, by1, bx2, by2), s in zip(boxes.long().tolist(), scores.tolist(), strict=True):
        total[by1:by2, bx1:bx2] += s
        cover[by1:by2, bx1:bx2] += 1
    m = torch.where(cover > 0, total / cover.clamp(min=1), total.new_tensor(float(scores.min())))
    return (m - m.min()) / (m.max() - m.min()).clamp(min=1e-8)


def region_mask(image: torch.Tensor, scorer: Scorer, crop_size: int, *, n_crops: int = 128,
                threshold: float = 0.5, smooth: int = 5, seed: int = 0) -> torch.Tensor:
    """A (1, 1, H, W) binary edit mask of where the scorer finds its phrase."""
    m = score_map(image, scorer, crop_size, n_crops, generator_seed=seed)[None, None]
    if smooth > 1:
        k = smooth | 1
        m = F.avg_pool2d(F.pad(m, [k // 2] * 4, mode="replicate"), k, stride=1)
    cut = m.mean() + threshold * m.std()
    return (m >= cut).float()

