"""Zoom videos: each frame is the last one zoomed, rotated and shifted, then painted on for a few steps.

Frame k+1 starts from frame k's *saved PNG* transformed (edges filled by reflection) and encoded back
to z, then runs ``steps_per_frame`` steps under a seed derived from the run's seed and k+1. So frame
k+1 depends only on frame k's pixels on disk and the request: a run resumed from its frames makes
exactly the frames an uninterrupted run would. Prompts may change over frames with the story syntax
(``"a ^ b"``): the part is chosen by frame number, not by step.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image

from engine.media.files import write_atomic
from engine.media.frames import existing_frames, frame_name
from engine.media.imageio import load_rgb, png_bytes
from engine.method.generate import generate, to_image, to_tensor, to_uint8
from engine.models.loader import Models
from engine.spec.prompts import parse_story, part_at
from engine.spec.request import MAX_SEED, Request, ZoomSpec
from engine.version import __version__


def frame_seed(seed: int, k: int) -> int:
    """Frame k's seed: from the run's seed and the frame number only (stable across processes)."""
    digest = hashlib.sha256(f"vqgan-clip zoom {seed} {k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (MAX_SEED + 1)


def zoom_frame(prev: torch.Tensor, zoom: float, rotate: float, shift: tuple[float, float]) -> torch.Tensor:
    """``prev`` (1, C, H, W) seen by a camera that zooms in by ``zoom``, turns ``rotate`` degrees and moves
    ``shift`` pixels (x, y); what comes into view from outside is the picture reflected at its edges."""
    _, _, h, w = prev.shape
    a = math.radians(rotate)
    cos, sin = math.cos(a) / zoom, math.sin(a) / zoom
    dx, dy = shift
    # Output pixel -> input pixel in pixel units, then in affine_grid's [-1, 1] units per axis.
    theta = torch.tensor([[cos, -sin * h / w, 2 * dx / w],
                          [sin * w / h, cos, 2 * dy / h]], dtype=torch.float32, device=prev.device)[None]
    grid = F.affine_grid(theta, list(prev.shape), align_corners=False)
    return F.grid_sample(prev.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def frame_request(req: Request, zoom: ZoomSpec, k: int, init: str | None) -> Request:
    """The still-image request that paints frame k (1-based) from ``init`` (None: the run's own start)."""
    parts = parse_story(req.prompt) if req.prompt else [""]  # no words: image prompts alone
    part = parts[part_at(k - 1, zoom.frames, len(parts), req.story_every)]
    return req.with_changes(prompt=part, steps=zoom.steps_per_frame, seed=frame_seed(req.seed, k),
                            init_image=init if init is not None else req.init_image, zoom=None,
                            story_every=None, inputs=())


def run_zoom(models: Models, req: Request, zoom: ZoomSpec, frames_dir: Path, *,
             on_frame: Callable[[int, Path], None] | None = None,
             should_stop: Callable[[], bool] | None = None, resume: bool = False,
             after: int = 0) -> list[Path]:
    """Paint ``zoom.frames`` frames into ``frames_dir`` as ``00001.png``, ... and return the paths of
    those in the folder.

    With ``resume`` the frames already there (without a gap from 00001) are kept and the run goes on
    from the last; without it, earlier frames in the folder are replaced. ``after``: the run goes on
    after that frame, which is in the folder while the ones before it may be elsewhere (a worker taking
    over a job another one began: the coordinator keeps the video's frames and hands over the newest).
    ``should_stop`` raises ``Cancelled`` between steps; the frames written so far stay.
    """
    frames_dir.mkdir(parents=True, exist_ok=True)
    if after and not (frames_dir / frame_name(after)).is_file():
        raise ValueError(f"frame {after} to go on from is not in {frames_dir}")
    done = after or (existing_frames(frames_dir) if resume else 0)
    for stale in frames_dir.glob("[0-9]*.png"):  # a later run's leftovers, after a gap, or everything
        if stale.stem.isdigit() and int(stale.stem) > done:
            stale.unlink()
    done = min(done, zoom.frames)
    paths = [p for k in range(1, done + 1) if (p := frames_dir / frame_name(k)).is_file()]
    with tempfile.TemporaryDirectory(prefix="vqgan-clip-zoom-") as tmp:
        for k in range(done + 1, zoom.frames + 1):
            init = None
            if k > 1:
                prev = to_tensor(load_rgb(paths[-1], what="previous frame"), models.device)
                init_path = Path(tmp) / "start.png"
                to_image(to_uint8(zoom_frame(prev, zoom.zoom, zoom.rotate, zoom.shift))).save(init_path)
                init = str(init_path)
            freq = frame_request(req, zoom, k, init)
            result = generate(models, freq, should_stop=should_stop, progress_every=zoom.steps_per_frame)
            meta = {"engine_version": __version__, "frame": k,
                    "request": req.to_metadata()}
            path = frames_dir / frame_name(k)
            write_atomic(path, png_bytes(_fit(result.image, paths), meta))
            paths.append(path)
            if on_frame is not None:
                on_frame(k, path)
    return paths


def _fit(img: Image.Image, earlier: list[Path]) -> Image.Image:
    """Every frame at the first frame's size (the working size a model's cells allow)."""
    if not earlier:
        return img
    with Image.open(earlier[-1]) as first:
        size = first.size
    return img if img.size == size else img.resize(size, Image.Resampling.LANCZOS)
