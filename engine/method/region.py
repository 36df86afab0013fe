"""CLIP finds the region itself (paper, appendix G.2): crop, score, record at the crop, normalise.

Many random square crops of the image are scored against a phrase in one batched CLIP pass
(``roi_align`` + chunks of ``batch`` crops). Each crop's score is added to every pixel it covers;
dividing by the coverage gives a per-pixel score map, normalised to [0, 1], smoothed, then
thresholded at ``mean + threshold * std`` (the paper uses ``threshold = -2``: two standard
deviations below the mean; our default is stricter, see config.toml).
The scorer is any ``crops -> scores`` function, so tests can inject one whose answer is known.

An ensemble of CLIP models finds the region together: each model scores the same crops at its own
input size, each model's map is normalised to [0, 1] on its own (the models' cosine similarities
live on different scales, so raw scores would let one model drown the others), and the weighted
mean of those maps (the ensemble's ``--clip-weight``s, as in the prompt loss) is thresholded.
One model gives exactly its own map, so a single-CLIP edit finds the same mask as before.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from engine.method.cutouts import cutouts

if TYPE_CHECKING:
    from engine.models.clip import Clip

Scorer = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Judge:
    """One model of an ensemble as the region search sees it: its scorer, input size and weight."""

    scorer: Scorer
    crop_size: int
    weight: float = 1.0


def clip_scorer(clip, phrase: str) -> Scorer:
    """Cosine similarity of each crop's CLIP embedding with the phrase's (paper: f(i) . g(s_p))."""
    text = clip.encode_text([phrase])[0]

    def score(crops: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return clip.encode_image(crops) @ text

    return score


def clip_judges(clips: Sequence[tuple[Clip, float]], phrase: str) -> list[Judge]:
    """Every CLIP of an ensemble (``Models.clips()``: model, weight) as a judge of the phrase."""
    return [Judge(clip_scorer(clip, phrase), clip.size, weight) for clip, weight in clips]


def ensemble_map(image: torch.Tensor, judges: Sequence[Judge], n_crops: int = 128,
                 generator_seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) -> (H, W): the weighted mean of each judge's normalised ``score_map`` over the
    same crops. A judge of weight 0 is not asked (it would change nothing); if all weigh 0, all count
    alike."""
    if not judges:
        raise ValueError("no judge to find the region")
    asked = [j for j in judges if j.weight > 0] or [Judge(j.scorer, j.crop_size) for j in judges]
    total = sum(j.weight for j in asked)
    maps = [score_map(image, j.scorer, j.crop_size, n_crops, generator_seed=generator_seed) for j in asked]
    if len(maps) == 1:
        return maps[0]  # exactly the one model's map (no rounding from weighting)
    weights = torch.tensor([j.weight / total for j in asked], device=image.device)
    return (torch.stack(maps) * weights[:, None, None]).sum(0)


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


def region_mask(image: torch.Tensor, judges: Sequence[Judge], *, n_crops: int = 128, threshold: float = 0.5,
                smooth: int = 5, seed: int = 0) -> torch.Tensor:
    """A (1, 1, H, W) binary edit mask of where the judges (one model, or an ensemble's together,
    see ``ensemble_map``) find the phrase."""
    m = ensemble_map(image, judges, n_crops, generator_seed=seed)[None, None]
    if smooth > 1:
        k = smooth | 1
        m = F.avg_pool2d(F.pad(m, [k // 2] * 4, mode="replicate"), k, stride=1)
    cut = m.mean() + threshold * m.std()
    return (m >= cut).float()

