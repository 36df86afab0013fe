"""A generation request: everything needed to redo an image exactly.

The whole request goes into the output PNG's metadata, so it holds the hyperparameters too,
not just the prompt. Build one with ``Request.from_config(cfg, prompt=..., **overrides)``;
``check_limits`` applies the server owner's limits (bot and CLI both call it).
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from engine import errors
from engine.config import (
    Beta,
    Config,
    Crops,
    Cutouts,
    CutPow,
    Decay,
    EditingConfig,
    Feather,
    GenerationConfig,
    GridSize,
    LimitsConfig,
    Lr,
    ModelSpec,
    Noise,
    Side,
    Steps,
    Threshold,
    Weight,
)
from engine.errors import UserError
from engine.spec.outpaint import Outpaint
from engine.spec.prompts import EMPTY_PROMPT, MAX_WEIGHT, check_text, parse_story, visible

_G, _E = GenerationConfig(), EditingConfig()  # the defaults, from one place

MAX_SEED = 2**32 - 1
"""Seeds are 0 .. 2**32-1 everywhere (CLI, Discord, metadata): numpy and torch both take them."""


Tile = Literal["none", "x", "xy"]
"""A seamless tile: "x" wraps left to right (panoramas), "xy" both ways; "none" is a plain picture."""


class ImagePrompt(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    path: str
    weight: float = Field(1.0, ge=-MAX_WEIGHT, le=MAX_WEIGHT)


class InputFile(BaseModel):
    """An input file as it was when the image was made, so that a rerun can find it and check it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str  # absolute
    sha256: str


class ZoomSpec(BaseModel):
    """A zoom video: ``frames`` pictures, each the last one zoomed/rotated/shifted and painted on for
    ``steps_per_frame`` steps. ``shift`` is in pixels (x, y); ``rotate`` in degrees."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    frames: int = Field(120, ge=1, le=100_000)
    steps_per_frame: int = Field(25, ge=1, le=100_000)
    zoom: float = Field(1.02, gt=0.1, le=10.0)
    rotate: float = Field(0.0, ge=-360.0, le=360.0)
    shift: tuple[float, float] = (0.0, 0.0)
    fps: int = Field(24, ge=1, le=60)

    @field_validator("shift")
    @classmethod
    def _small_shift(cls, v: tuple[float, float]) -> tuple[float, float]:
        if any(abs(d) > 10_000 for d in v):
            raise UserError("the shift must be at most 10000 pixels each way")
        return v


class Request(BaseModel):
    """One image to make or edit. Paths point at files the engine may read.

    Every number must be finite and inside a range that float32 tensors and Adam survive: a weight
    of 1e39 is finite here but infinite on the GPU, and the picture would come out black.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    kind: Literal["imagine", "edit", "vary", "outpaint", "upscale"] = "imagine"
    prompt: str  # may be empty when there are image prompts (a blend of pictures alone)
    negative: tuple[str, ...] = ()  # --no: texts to keep out, weight -1 each, in every part of a story
    parameters: str = ""  # the parameters as typed at the prompt's end ("--ar 16:9 --seed 7"), for people
    seed: int = Field(default_factory=lambda: random.randrange(MAX_SEED + 1), ge=0, le=MAX_SEED)
    steps: Steps = _G.steps
    width: Side = _G.width
    height: Side = _G.height
    cutouts: Cutouts = _G.cutouts
    cut_pow: CutPow = _G.cut_pow
    lr: Lr = _G.lr
    betas: tuple[Beta, Beta] = (_G.beta1, _G.beta2)
    z_l2_weight: Weight = _G.z_l2_weight
    z_l2_decay: Decay = _G.z_l2_decay
    noise: Noise = _G.noise
    augment: bool = _G.augment
    image_prompts: tuple[ImagePrompt, ...] = ()
    init_image: str | None = None
    mask: str | None = None
    region: str | None = None
    region_threshold: Threshold = _E.region_threshold
    region_crops: Crops = _E.region_crops
    feather: Feather = _E.feather
    keep_structure: Weight = 0.0  # a new image has nothing to keep; edits take editing.keep_structure
    keep_latent: Weight = 0.0
    models: ModelSpec = ModelSpec()
    parent: str | None = None
    inputs: tuple[InputFile, ...] = ()  # init image, mask, image prompts: absolute path + sha256
    story_every: int | None = Field(None, ge=1)  # a story ("a ^ b"): steps (frames, in a zoom) per part
    zoom: ZoomSpec | None = None  # a zoom video; None = a still image
    tile: Tile = "none"  # a seamless tile: the picture wraps around horizontally ("x") or both ways ("xy")
    outpaint: Outpaint | None = None  # kind "outpaint": init_image grown by these margins, only they painted
    grid: GridSize = 1  # candidates painted as one job (seeds seed .. seed+grid-1), shown as one grid

    @model_validator(mode="after")
    def _outpaint_whole(self) -> Request:
        if (self.kind == "outpaint") != (self.outpaint is not None):
            raise UserError("an outpaint request has kind 'outpaint' and its margins, together or not at all")
        if self.outpaint is not None and (not self.init_image or self.mask or self.region):
            raise UserError("an outpaint grows its input image (init_image) and makes its own mask: "
                            "no mask or region with it")
        return self

    @model_validator(mode="after")
    def _one_zoom(self) -> Request:
        if self.grid > 1 and self.zoom is not None:
            raise UserError("a zoom video is one picture: it cannot be a grid")
        return self

    @field_validator("region")
    @classmethod
    def _region_text(cls, v: str | None) -> str | None:
        if v is not None and not visible(v):
            raise UserError("the region phrase is empty: name what to change, e.g. 'jacket'")
        if v is not None:
            check_text(v, "the region phrase")
        return v.strip() if v else None

    @field_validator("prompt")
    @classmethod
    def _prompt_parses(cls, v: str) -> str:
        if not visible(v):
            return ""  # only with image prompts (``_something_to_paint``)
        parse_story(v)
        return v.strip()

    @field_validator("negative")
    @classmethod
    def _negatives(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = tuple(" ".join(n.split()) for n in v)
        for n in out:
            if not visible(n):
                raise UserError("a negative prompt (--no) is empty: name what to keep out, e.g. --no people, text")
            check_text(n, "the negative prompt")
        return out

    @field_validator("parameters")
    @classmethod
    def _parameters_text(cls, v: str) -> str:
        check_text(v, "the parameters")
        return " ".join(v.split())

    @model_validator(mode="after")
    def _something_to_paint(self) -> Request:
        if not self.prompt and not self.image_prompts:
            raise UserError(EMPTY_PROMPT)
        return self

    @classmethod
    def from_config(cls, cfg: Config, **overrides: Any) -> Request:
        """Defaults from config.toml, then the caller's overrides (``None`` means default)."""
        g, e = cfg.generation, cfg.editing
        base: dict[str, Any] = {**g.model_dump(include=_FROM_GENERATION), "betas": (g.beta1, g.beta2),
                                **e.model_dump(include=_FROM_EDITING), "models": cfg.models.spec()}
        if overrides.get("init_image"):  # edits and variations keep some of the original by default
            base.update(keep_structure=e.keep_structure, keep_latent=e.keep_latent)
        base.update({k: v for k, v in overrides.items() if v is not None})
        return cls.parse(base)

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Request:
        """Validate, turning pydantic's report into one ``UserError`` line."""
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise UserError(validation_message(e)) from None

    def with_changes(self, **changes: Any) -> Request:
        """A validated copy (``model_copy`` would skip validation)."""
        return self.parse({**self.model_dump(), **changes})

    def to_metadata(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


_KEPT = {"keep_structure", "keep_latent"}  # from config.toml for edits and variations only
_FROM_GENERATION = set(Request.model_fields) & set(GenerationConfig.model_fields)
_FROM_EDITING = set(Request.model_fields) & set(EditingConfig.model_fields) - _KEPT


def validation_message(err: ValidationError) -> str:
    """One short line from a pydantic error about a request, e.g. ``steps: must be at least 1``."""
    return errors.validation_message(err, ranges={"seed": f"must be a whole number from 0 to {MAX_SEED}"})


def check_files_beside(req: Request, folder: Path, *, source: str) -> None:
    """Images named by a request read from a file may only be in that file's folder (or below it),
    unless the request pins their content by sha256 (``Request.inputs``, see ``engine.spec.pinning.locate``).

    A rerun opens the input, mask and image prompts its metadata names; without this a PNG from
    anywhere could make us read any picture on the disk into a new image.
    """
    top = folder.resolve()
    pinned = {i.path for i in req.inputs}  # found again only by their sha256: nothing new can be read
    named = [req.init_image, req.mask, *(p.path for p in req.image_prompts)]
    for path in filter(None, named):
        if path in pinned:
            continue
        resolved = resolved_path(path)
        if resolved is None or not resolved.is_relative_to(top):
            raise UserError(f"{source}: its metadata names the image {path!r}, outside the PNG's folder; "
                            "a rerun opens only images beside the PNG (copy them there, or use edit)")


def resolved_path(path: str) -> Path | None:
    """The absolute path without links, or None for a name no file can have (e.g. with a NUL byte)."""
    try:
        return Path(path).resolve()
    except (OSError, ValueError):
        return None


def variation_of(made: Request, image: str, size: tuple[int, int], editing: EditingConfig, *, parent: str,
                 strength: float | None = None, **changes: Any) -> Request:
    """A variation of the picture ``made`` painted (CLI ``vary``, the bot's vary reaction): that picture
    as the start, the same prompt and settings, ``strength`` (default ``editing.vary_strength``) of its
    steps, pulled towards it by ``editing.keep_structure``/``keep_latent``. The whole picture varies:
    no mask, no region. ``changes`` go on top (e.g. a new seed, the command line's flags)."""
    strength = editing.vary_strength if strength is None else strength
    return made.with_changes(**{
        "kind": "vary", "init_image": image, "width": size[0], "height": size[1],
        "steps": max(1, round(made.steps * strength)), "keep_structure": editing.keep_structure,
        "keep_latent": editing.keep_latent, "parent": parent, "mask": None, "region": None, "outpaint": None,
        "grid": 1, **changes})


def outpaint_of(made: Request, image: str, size: tuple[int, int], margins: Outpaint, *, parent: str,
                **changes: Any) -> Request:
    """The picture ``made`` painted (``image``, of ``size``) on a canvas grown by ``margins`` (CLI
    ``outpaint``, the bot's zoom and pan buttons): the same prompt and settings, only the margins and the
    seam painted. Nothing pulls towards the input (the mask keeps it): keep-structure and keep-latent are
    0 unless ``changes`` say otherwise; the canvas does not tile (it is a new picture around the old)."""
    w, h = margins.canvas(size)
    return made.with_changes(**{
        "kind": "outpaint", "init_image": image, "width": w, "height": h, "outpaint": margins.model_dump(),
        "keep_structure": 0.0, "keep_latent": 0.0, "parent": parent, "mask": None, "region": None,
        "zoom": None, "tile": "none", "grid": 1, **changes})


def grid_shape(n: int) -> tuple[int, int]:
    """A grid's rows and columns, as near square as possible (2: 1x2, 4: 2x2, 6: 2x3, 9: 3x3)."""
    rows = max(r for r in range(1, math.isqrt(n) + 1) if n % r == 0)
    return rows, n // rows


def candidate_request(grid: Request, i: int, *, parent: str | None = None) -> Request:
    """Candidate ``i`` (1-based) of a grid: the same request alone (``grid=1``) with its own seed,
    ``grid.seed + i - 1``, so that a solo run (a rerun of its PNG) paints the same picture."""
    if not 1 <= i <= grid.grid:
        raise UserError(f"there is no candidate {i} in a grid of {grid.grid}")
    return grid.with_changes(grid=1, seed=(grid.seed + i - 1) % (MAX_SEED + 1),
                             parent=parent if parent is not None else grid.parent)


MAX_SCALE = 8.0


def upscale_size(size: tuple[int, int], scale: float, limits: LimitsConfig) -> tuple[int, int]:
    """``size`` times ``scale``; a ``UserError`` with the largest scale allowed when that is over ``limits``
    (checked before anything runs)."""
    if not (math.isfinite(scale) and 1 < scale <= MAX_SCALE):
        raise UserError(f"the scale must be more than 1 and at most {MAX_SCALE:g} (got {scale:g})")
    w, h = size
    out = (round(w * scale), round(h * scale))
    if not _fits(out, limits):
        best = largest_scale(size, limits)
        hint = (f"the largest scale for this {w}x{h} picture is {best:g}" if best > 1
                else f"this {w}x{h} picture is as large as the limits allow")
        raise UserError(f"upscaling {w}x{h} by {scale:g} gives {out[0]}x{out[1]}, over the limit "
                        f"({limits.max_width}x{limits.max_height}, {limits.max_pixels} pixels in all); {hint}")
    return out


def _fits(size: tuple[int, int], limits: LimitsConfig) -> bool:
    w, h = size
    return w <= limits.max_width and h <= limits.max_height and w * h <= limits.max_pixels


def largest_scale(size: tuple[int, int], limits: LimitsConfig) -> float:
    """The largest scale (in hundredths) that keeps ``size`` inside ``limits``; 1 or less: none."""
    w, h = size
    best = math.floor(min(limits.max_width / w, limits.max_height / h,
                          math.sqrt(limits.max_pixels / (w * h))) * 100) / 100
    while best > 1 and not _fits((round(w * best), round(h * best)), limits):
        best = round(best - 0.01, 2)
    return best


def upscale_of(made: Request, image: str, size: tuple[int, int], scale: float, editing: EditingConfig,
               limits: LimitsConfig, *, parent: str, **changes: Any) -> Request:
    """An upscale of the picture ``made`` painted (CLI ``upscale``, the bot's Upscale and U buttons): that
    picture enlarged ``scale`` times (``prepare`` resizes it with Lanczos and encodes it), painted for
    ``editing.upscale_steps`` steps with its own prompt, pulled towards the enlarged original by
    ``editing.keep_structure``/``keep_latent`` so that it gains detail, not a new subject. Over ``limits``
    it is refused before anything runs. ``changes`` go on top (e.g. the command line's flags)."""
    width, height = upscale_size(size, scale, limits)
    return made.with_changes(**{
        "kind": "upscale", "init_image": image, "width": width, "height": height, "steps": editing.upscale_steps,
        "keep_structure": editing.keep_structure, "keep_latent": editing.keep_latent, "parent": parent,
        "mask": None, "region": None, "grid": 1, "zoom": None, **changes})


def check_prompt_length(prompt: str, limits: LimitsConfig) -> None:
    """The server's prompt length limit (the bot checks it before anything else reads the prompt)."""
    if len(prompt) > limits.max_prompt_chars:
        raise UserError(f"the prompt is {len(prompt)} characters; the limit is {limits.max_prompt_chars}")


def check_limits(req: Request, limits: LimitsConfig) -> None:
    """Refuse a request over the server's limits with a message that says what to change."""
    check_prompt_length(req.prompt, limits)
    if req.steps > limits.max_steps:
        raise UserError(f"steps must be between 1 and {limits.max_steps} (got {req.steps})")
    if req.width > limits.max_width or req.height > limits.max_height or req.width * req.height > limits.max_pixels:
        raise UserError(
            f"size {req.width}x{req.height} is over the limit "
            f"({limits.max_width}x{limits.max_height}, {limits.max_pixels} pixels in all)"
        )
    if req.cutouts > limits.max_cutouts:
        raise UserError(f"cutouts must be at most {limits.max_cutouts} (got {req.cutouts})")
    if len(req.image_prompts) > limits.max_image_prompts:
        raise UserError(f"at most {limits.max_image_prompts} image prompts (got {len(req.image_prompts)})")
    if req.zoom is not None:
        check_zoom_limits(req.zoom, limits)


def check_zoom_limits(zoom: ZoomSpec, limits: LimitsConfig) -> None:
    """A zoom video's size: frames, and frames x steps per frame (its whole cost)."""
    if zoom.frames > limits.max_frames:
        raise UserError(f"frames must be at most {limits.max_frames} (got {zoom.frames})")
    total = zoom.frames * zoom.steps_per_frame
    if total > limits.max_video_steps:
        raise UserError(f"a zoom of {zoom.frames} frames x {zoom.steps_per_frame} steps is {total} steps; "
                        f"the limit is {limits.max_video_steps}")


def batch_key(request: Request) -> tuple:
    """Jobs with equal keys share models and size, so one worker can step them together (a zoom
    video never joins a batch of still pictures; tiled jobs share their decoder's padding)."""
    return (request.models.vqgan_key(), request.models.clip_key(), request.width, request.height,
            request.zoom is not None, request.tile)
