"""Zoom out and pan (outpainting): how far a canvas grows on each side, as a request records it.

The picture keeps its own pixels at its own scale: the canvas is the picture plus margins, grown to
whole VQGAN cells, and only the margins and ``seam`` pixels into the picture (on the sides that grew)
are painted, by the masked edit. This module is the arithmetic (no pictures): ``plan`` turns a zoom
factor or margins into an ``Outpaint``; ``engine.media.canvas`` makes the canvas and mask from it.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from engine.config import LimitsConfig
from engine.errors import UserError

MAX_MARGIN = 16_384  # pixels on one side: far beyond any limit, small enough for any arithmetic
MAX_SEAM = 128
MAX_ZOOM_OUT = 4.0
SIDES = ("left", "right", "up", "down")


class Outpaint(BaseModel):
    """The margins added to a picture (pixels) and the seam repainted into it along each side that grew."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    left: int = Field(0, ge=0, le=MAX_MARGIN)
    right: int = Field(0, ge=0, le=MAX_MARGIN)
    up: int = Field(0, ge=0, le=MAX_MARGIN)
    down: int = Field(0, ge=0, le=MAX_MARGIN)
    seam: int = Field(16, ge=0, le=MAX_SEAM)

    def canvas(self, size: tuple[int, int]) -> tuple[int, int]:
        """The canvas for a picture of ``size``: the picture and its margins."""
        return size[0] + self.left + self.right, size[1] + self.up + self.down


def plan(size: tuple[int, int], factor: int, *, seam: int, zoom_out: float | None = None, left: int = 0,
         right: int = 0, up: int = 0, down: int = 0) -> Outpaint:
    """The margins for a picture of ``size``: ``zoom_out`` times its size (the picture in the middle),
    or the given margins; then each axis grown to whole cells of ``factor`` pixels (the extra goes to
    the sides that grow, shared when both do; to the right or bottom when neither does)."""
    margins = {"left": left, "right": right, "up": up, "down": down}
    if zoom_out is not None:
        if any(margins.values()):
            raise UserError("give either --zoom-out or margins (--left/--right/--up/--down), not both")
        if not 1 < zoom_out <= MAX_ZOOM_OUT:
            raise UserError(f"zoom out must be more than 1 and at most {MAX_ZOOM_OUT:g} (got {zoom_out:g})")
        grow_w, grow_h = (round(side * zoom_out) - side for side in size)
        margins = {"left": grow_w // 2, "right": grow_w - grow_w // 2, "up": grow_h // 2, "down": grow_h - grow_h // 2}
    for side, px in margins.items():
        if not 0 <= px <= MAX_MARGIN:
            raise UserError(f"--{side} must be between 0 and {MAX_MARGIN} pixels (got {px})")
    if not any(margins.values()):
        raise UserError("nothing to paint: give --zoom-out F or a margin (--left/--right/--up/--down PX)")
    if not 0 <= seam <= MAX_SEAM:
        raise UserError(f"--seam must be between 0 and {MAX_SEAM} pixels (got {seam})")
    left, right = _whole(size[0], margins["left"], margins["right"], factor)
    up, down = _whole(size[1], margins["up"], margins["down"], factor)
    return Outpaint(left=left, right=right, up=up, down=down, seam=seam)


def _whole(side: int, a: int, b: int, factor: int) -> tuple[int, int]:
    extra = -(side + a + b) % factor
    if a and b:
        return a + extra // 2, b + extra - extra // 2
    return (a + extra, b) if a else (a, b + extra)


def check_canvas(size: tuple[int, int], limits: LimitsConfig, what: str) -> None:
    """A canvas over the server's size limits is refused in one line, before anything runs."""
    w, h = size
    if w > limits.max_width or h > limits.max_height or w * h > limits.max_pixels:
        raise UserError(f"{what} would make the picture {w}x{h}, over the limit "
                        f"({limits.max_width}x{limits.max_height}, {limits.max_pixels} pixels in all)")
