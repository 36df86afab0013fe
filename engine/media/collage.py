"""Collages made whole: pieces pasted on a canvas, holes and seams become the edit mask.

The idea of latent composition (GAN inversion of a collage), without training a regressor:
the canvas is encoded by the VQGAN like any input, the uncovered or transparent regions are
the mask, and a band of ``seam`` pixels along every border between pieces (and between a piece
and a hole) is added to the mask, so the optimisation repaints the joins into one picture.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

Piece = tuple[Image.Image, tuple[int, int]]


def parse_paste(spec: str) -> tuple[str, tuple[int, int]]:
    """``IMG@x,y`` -> (path, (x, y))."""
    path, sep, pos = spec.rpartition("@")
    try:
        x, y = (int(v) for v in pos.split(","))
    except ValueError:
        path = ""
    if not sep or not path:
        from engine.errors import UserError

        raise UserError(f"--paste {spec!r}: write it as IMAGE@X,Y, e.g. cat.png@0,32")
    return path, (x, y)


def left_to_right(images: list[Image.Image], height: int | None = None) -> list[Piece]:
    """Lay pieces side by side at a common height (how the bot arranges several attachments)."""
    height = height or min(im.height for im in images)
    pieces, x = [], 0
    for im in images:
        scaled = im.resize((max(1, round(im.width * height / im.height)), height), Image.Resampling.LANCZOS)
        pieces.append((scaled, (x, 0)))
        x += scaled.width
    return pieces


def build(pieces: list[Piece], size: tuple[int, int] | None = None, seam: int = 8,
          base: Image.Image | None = None) -> tuple[Image.Image, Image.Image]:
    """Paste pieces (RGBA respected) on a canvas; return (RGB canvas, L mask: white = repaint)."""
    if size is None:
        ref = [base.size] if base is not None else []
        size = (max([x + im.width for im, (x, _) in pieces] + [w for w, _ in ref]),
                max([y + im.height for im, (_, y) in pieces] + [h for _, h in ref]))
    canvas = Image.new("RGBA", size, (0, 0, 0, 0))
    owner = np.zeros(size[::-1], dtype=np.int32)  # 0 = uncovered, i = piece i
    layers = ([(base, (0, 0))] if base is not None else []) + pieces
    for i, (im, (x, y)) in enumerate(layers, start=1):
        rgba = im.convert("RGBA")
        canvas.paste(rgba, (x, y), rgba)
        layer = Image.new("L", size, 0)
        layer.paste(rgba.getchannel("A"), (x, y))
        owner[np.asarray(layer) > 127] = i
    hole = np.asarray(canvas.getchannel("A")) < 128
    band = np.zeros_like(hole)
    if seam > 0:
        # Every pixel within ``seam`` pixels (a square window) of a pixel of another piece or of a hole:
        # exactly ``seam`` pixels each side of every join, corners included.
        window = Image.fromarray(owner)  # int32: mode "I"
        band = (np.asarray(window.filter(ImageFilter.MaxFilter(2 * seam + 1)))
                != np.asarray(window.filter(ImageFilter.MinFilter(2 * seam + 1))))
    mask = Image.fromarray(((hole | band) * 255).astype(np.uint8))
    # Holes start from the mean colour of what is there, not black, so the fill is not pulled dark.
    rgb = np.asarray(canvas.convert("RGB")).astype(np.float32)
    fill = rgb[~hole].mean(0) if (~hole).any() else np.full(3, 127.0)
    rgb[hole] = fill
    return Image.fromarray(rgb.round().astype(np.uint8)), mask


def has_holes(image: Image.Image) -> bool:
    """Whether some of the picture is transparent (alpha below half)."""
    if image.mode not in ("RGBA", "LA", "P") or "A" not in image.convert("RGBA").getbands():
        return False
    return int(np.asarray(image.convert("RGBA").getchannel("A")).min()) < 128


def assemble(pieces: list[Piece], seam: int, base: Image.Image | None = None) -> tuple[Image.Image, Image.Image] | None:
    """What to edit when pictures are put together (CLI ``--paste`` or a transparent input, the bot's
    uploads): ``pieces`` pasted on ``base``, holes and seams the mask. None when there is nothing to put
    together (no pieces, a base without transparency): the picture is edited as it is."""
    if not pieces and (base is None or not has_holes(base)):
        return None
    return build(pieces, seam=seam, base=base)



def tile(images: list[Image.Image], cols: int) -> Image.Image:
    """Pictures of one size in rows of ``cols``, left to right and top to bottom: a grid's composite
    (candidate 1 top left)."""
    w, h = images[0].size
    rows = -(-len(images) // cols)
    out = Image.new("RGB", (w * cols, h * rows))
    for i, im in enumerate(images):
        out.paste(im.convert("RGB"), ((i % cols) * w, (i // cols) * h))
    return out
