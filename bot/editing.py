"""Editing by words in Discord: a region phrase, collages of uploads, variations and upscales of results.

The engine does the work (CLIP finds the region, the VQGAN repaints holes and seams); this module
turns what people post into the files and fields of a ``Request``. Collages are made here, not in
the engine, because a job only carries file paths: the canvas and its mask are written into the
uploads folder (pruned like any upload) and the request points at them. ``engine.media.collage`` needs
numpy and PIL only, so importing this never imports torch.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from PIL import Image, ImageChops

from bot.config import BotConfig
from bot.inputs import fit_request_size, rerun_request
from bot.origin import Origin
from bot.uploads import ImageRef, download, image_size, save_png
from engine import (
    Request,
    UserError,
    assemble,
    build,
    candidate_files,
    candidate_request,
    check_canvas,
    check_limits,
    check_mask_shape,
    check_offered,
    left_to_right,
    load_mask,
    outpaint_of,
    plan_outpaint,
    upscale_of,
    variation_of,
    visible,
    vqgan_factor,
)

if TYPE_CHECKING:
    from engine import Job

ARROW = re.compile(r"\s*(?:->|→)\s*")
REGION_HOWTO = ("write it as `what to change -> what it becomes`, e.g. `jacket -> a fur coat` "
                "(or use /edit with `region:`)")
MAX_PIECES = 4  # images laid side by side in one collage; more would be too thin to repaint well
COLLAGE_PREFIX = "collage-"  # uploads the bot made; delivery shows their mask


def split_arrow(text: str) -> tuple[str | None, str]:
    """``jacket -> fur`` -> ``("jacket", "fur")``; no arrow -> ``(None, text)``; an empty side refuses."""
    parts = ARROW.split(text, maxsplit=1)
    if len(parts) == 1:
        return None, text
    region, prompt = (" ".join(p.split()) for p in parts)
    if not visible(region) or not visible(prompt):
        raise UserError(REGION_HOWTO)
    return region, prompt


# --------------------------------------------------------------------------- collages


@dataclass(frozen=True)
class EditInput:
    """What a request edits: the start image, its mask (if any), the working size, a line to show."""

    init: Path
    mask: Path | None
    size: tuple[int, int]
    note: str | None = None

    def fields(self) -> dict[str, Any]:
        w, h = self.size
        return {"init_image": str(self.init), "mask": str(self.mask) if self.mask else None, "width": w, "height": h}


def piece_name(i: int, n: int) -> str:
    """How a refusal names one of several pictures."""
    return "image" if n == 1 else f"image {i + 1} of {n}"


async def prepare(bot: discord.Client, cfg: BotConfig, images: list[ImageRef],
                  mask: ImageRef | None = None) -> EditInput:
    """Download the pictures and make them one thing to edit: the image, its holes, or a collage."""
    refs = images[:MAX_PIECES]
    paths = [await download(bot, cfg, r, piece_name(i, len(refs))) for i, r in enumerate(refs)]
    mask_path = await download(bot, cfg, mask, "mask") if mask is not None else None
    return await asyncio.to_thread(compose, cfg, paths, mask_path, len(images) - len(refs))


def compose(cfg: BotConfig, paths: list[Path], mask: Path | None = None, left_out: int = 0) -> EditInput:
    """Stored uploads -> ``EditInput`` (blocking: PIL and numpy work; run it in a thread)."""
    if len(paths) > 1:
        if mask is not None:
            raise UserError("a mask goes with one image; with several, their seams are what gets repainted")
        return _collage(cfg, paths, left_out)
    return _single(cfg, paths[0], mask)


def _open(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.copy()


def _single(cfg: BotConfig, path: Path, mask: Path | None) -> EditInput:
    """One picture: as it is, or, when it has transparent holes, a canvas with the holes as the mask."""
    img = _open(path)
    if mask is not None:
        check_mask_shape(image_size(mask), img.size)
    size = fit_request_size(*img.size, cfg)
    # at the working size, so that the seam is `editing.seam` pixels of the picture the engine paints
    made = assemble([], cfg.editing.seam, base=img.resize(size, Image.Resampling.LANCZOS))
    if made is None:
        return EditInput(path, mask, size)
    canvas, holes = made
    if mask is not None:  # the holes must be filled whatever the mask says: change either
        holes = ImageChops.lighter(holes, load_mask(mask).resize(size, Image.Resampling.NEAREST))
    init, mask_out = _save_pair(cfg, canvas, holes)
    return EditInput(init, mask_out, size, "the transparent parts are repainted")


def _collage(cfg: BotConfig, paths: list[Path], left_out: int) -> EditInput:
    """Several pictures side by side at the working height; the seams between them are the mask."""
    imgs = [_open(p) for p in paths]
    h0 = min(im.height for im in imgs)
    natural = (sum(max(1, round(im.width * h0 / im.height)) for im in imgs), h0)
    w, h = fit_request_size(*natural, cfg)
    canvas, mask = build(left_to_right(imgs, height=h), seam=cfg.editing.seam)
    init, mask_out = _save_pair(cfg, canvas, mask)
    note = f"made a collage of {len(imgs)} images"
    if left_out:
        note += f" (at most {MAX_PIECES}: {left_out} left out)"
    return EditInput(init, mask_out, (w, h), note)


def _save_pair(cfg: BotConfig, canvas: Image.Image, mask: Image.Image) -> tuple[Path, Path]:
    """Canvas and mask into the uploads folder, named by their content (the same collage = the same files)."""
    digest = hashlib.sha256(f"{canvas.size}".encode() + canvas.tobytes() + mask.tobytes()).hexdigest()[:32]
    folder = cfg.discord.data_path / "uploads"
    init, mask_path = folder / f"{COLLAGE_PREFIX}{digest}.png", folder / f"{COLLAGE_PREFIX}{digest}-mask.png"
    for img, dest in ((canvas, init), (mask, mask_path)):
        if dest.exists():
            dest.touch()  # in use again: keep it past the next prune
        else:
            save_png(img, dest)
    return init, mask_path


def is_collage(req: Request) -> bool:
    """Whether the request's mask is one the bot made from holes and seams (worth showing)."""
    return bool(req.mask) and Path(req.mask or "").name.startswith(COLLAGE_PREFIX)


# --------------------------------------------------------------------------- variations


def new_seed(old: int) -> int:
    seed = random.randrange(2**31)
    while seed == old:
        seed = random.randrange(2**31)
    return seed


GONE = ("the picture behind that result is gone (old results are cleaned up); "
        "reply to it with words to edit it instead")
UPSCALE_SCALE = 2.0  # the Upscale and U buttons: twice as large each way


def picture_of(job: Job, candidate: int | None = None) -> tuple[Request, Path, str]:
    """The request that painted a finished job's picture (or picture ``candidate`` of its grid), the
    picture's file (from the results folder), and how a new job made from it names its parent (the job
    id, or ``<job id>-<candidate>`` as the candidate's file is named)."""
    n = job.request.grid
    if candidate is None and n > 1:
        raise UserError(f"that is a grid of {n} pictures: press U1…U{n} or V1…V{n} under it for one of them")
    if candidate is None:
        path, made, name = Path(job.result_path or ""), job.request, job.id
    elif not 1 <= candidate <= n:
        raise UserError(f"job {job.id} has no picture {candidate}")
    else:
        files = candidate_files(job)
        path = files[candidate - 1] if files else Path("")
        made, name = candidate_request(job.request, candidate, parent=job.id), f"{job.id}-{candidate}"
    if not job.result_path or not path.is_file():
        raise UserError(GONE)
    return made, path, name


def variation_request(cfg: BotConfig, job: Job, seed: int, candidate: int | None = None) -> Request:
    """The parent's own picture as the start, a new seed, fewer steps, pulled towards the parent
    (a zoom's variation is a still picture of its last frame; a grid's, of one candidate)."""
    made, path, name = picture_of(job, candidate)
    req = variation_of(made, str(path), image_size(path), cfg.editing, parent=name, seed=seed, zoom=None)
    check_limits(req, cfg.limits)
    return req


# --------------------------------------------------------------------------- zoom out and pan

OUTPAINTS: dict[str, str] = {"zoomout15": "zoom out 1.5x", "zoomout2": "zoom out 2x", "panleft": "pan left",
                             "panright": "pan right", "panup": "pan up", "pandown": "pan down"}
"""The zoom-out and pan buttons' actions (``bot.views.OUTPAINT_ACTIONS``) and how a status line names them."""


def outpaint_request(cfg: BotConfig, job: Job, how: str, seed: int) -> Request:
    """The result's picture on a bigger canvas, only the new area (and a seam) painted with its prompt:
    zoomed out 1.5x or 2x (the picture in the middle), or a pan (that side extended by half the picture's
    size). A canvas over the limits is refused in one line."""
    _, path, _ = picture_of(job)
    size = image_size(path)
    grows: dict[str, dict[str, Any]] = {"zoomout15": {"zoom_out": 1.5}, "zoomout2": {"zoom_out": 2.0},
                                        "panleft": {"left": size[0] // 2}, "panright": {"right": size[0] // 2},
                                        "panup": {"up": size[1] // 2}, "pandown": {"down": size[1] // 2}}
    grow = grows[how]
    margins = plan_outpaint(size, vqgan_factor(job.request.models), seam=cfg.editing.outpaint_seam, **grow)
    check_canvas(margins.canvas(size), cfg.limits, OUTPAINTS[how])
    req = outpaint_of(job.request, str(path), size, margins, parent=job.id, seed=seed)
    check_limits(req, cfg.limits)
    check_offered(req.models, cfg.models)  # the operator may have withdrawn a model since
    return req


def upscale_request(cfg: BotConfig, job: Job, candidate: int | None = None) -> tuple[Request, str, Origin]:
    """What the Upscale (or a grid's U) button asks for: that picture twice as large, painted on with its
    own prompt and pulled towards it; refused in one line (with the largest scale) over the limits."""
    made, path, name = picture_of(job, candidate)
    req = upscale_of(made, str(path), image_size(path), UPSCALE_SCALE, cfg.editing, cfg.limits, parent=name)
    check_limits(req, cfg.limits)
    check_offered(req.models, cfg.models)  # the operator may have withdrawn a model since
    what = f"picture {candidate} of job {job.id}" if candidate else f"job {job.id}"
    return req, f"upscale of {what}", Origin(upscale_of=job.id, candidate=candidate)


def again(cfg: BotConfig, job: Job, how: str, candidate: int | None = None) -> tuple[Request, str, Origin]:
    """What 🔁 or 🎲 on ``job``'s result asks for (a reaction or a button; a grid's V button names its
    ``candidate``), or a zoom-out or pan button (``OUTPAINTS``): the new request, the line shown under its
    status, and where it came from. A rerun of a grid is a new grid."""
    if how in OUTPAINTS:
        return (outpaint_request(cfg, job, how, new_seed(job.request.seed)), f"{OUTPAINTS[how]} of job {job.id}",
                Origin(outpaint_of=job.id))
    if how == "rerun":
        req = rerun_request(cfg, job.request, new_seed(job.request.seed)).model_copy(update={"parent": job.id})
        return req, f"rerun of job {job.id} with a new seed", Origin(rerun_of=job.id)
    made, _, _ = picture_of(job, candidate)
    req = variation_request(cfg, job, new_seed(made.seed), candidate)
    what = f"picture {candidate} of job {job.id}" if candidate else f"job {job.id}"
    return req, f"variation of {what}", Origin(variation_of=job.id, candidate=candidate)
