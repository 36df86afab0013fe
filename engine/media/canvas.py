"""The canvas of an outpaint (zoom out, pan): the picture on a bigger canvas, and what to paint.

The picture goes on the canvas at its own scale and place (``Outpaint.left``, ``up``); the margins
start as the picture mirrored at its edges (colours and textures that continue it, a better start for
the VQGAN than a flat fill); the mask is the margins plus ``seam`` pixels into the picture along each
side that grew. The masked edit then repaints only that, and keeps every other pixel bit for bit.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.spec.outpaint import Outpaint


def grow(image: Image.Image, margins: Outpaint) -> tuple[Image.Image, Image.Image]:
    """(RGB canvas, L mask: white = paint) for ``image`` grown by ``margins``."""
    rgb = np.asarray(image.convert("RGB"))
    m = margins
    canvas = np.pad(rgb, ((m.up, m.down), (m.left, m.right), (0, 0)), mode="symmetric")
    h, w = rgb.shape[:2]
    keep = np.zeros(canvas.shape[:2], dtype=bool)
    s = m.seam
    top, bottom = m.up + (s if m.up else 0), m.up + h - (s if m.down else 0)
    left, right = m.left + (s if m.left else 0), m.left + w - (s if m.right else 0)
    keep[top:max(top, bottom), left:max(left, right)] = True
    mask = np.where(keep, 0, 255).astype(np.uint8)
    return Image.fromarray(canvas), Image.fromarray(mask)
