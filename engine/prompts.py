"""Prompt syntax: ``"text:weight:stop|other text:-0.5"``.

A weight is a float (negative pushes the image away from the text); ``stop`` is a
distance below which a prompt stops pulling (e.g. ``-inf`` = never). Colons inside the
text are kept: only trailing fields that parse as numbers are taken as weight/stop,
so ``"http://x"`` stays one text.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from engine.errors import UserError


@dataclass(frozen=True)
class Prompt:
    text: str
    weight: float = 1.0
    stop: float = -math.inf


def _number(s: str) -> float | None:
    try:
        v = float(s)
    except ValueError:
        return None
    return None if math.isnan(v) else v


def parse_one(spec: str) -> Prompt:
    """Parse ``text[:weight[:stop]]``."""
    parts = spec.split(":")
    nums: list[float] = []
    while len(parts) > 1 and len(nums) < 2 and (v := _number(parts[-1].strip())) is not None:
        nums.insert(0, v)
        parts.pop()
    text = ":".join(parts).strip()
    if not text:
        raise UserError(f"prompt part {spec!r} has no text")
    weight = nums[0] if nums else 1.0
    stop = nums[1] if len(nums) > 1 else -math.inf
    if math.isinf(weight):
        raise UserError(f"prompt weight in {spec!r} must be finite")
    return Prompt(text, weight, stop)


def parse_prompts(spec: str) -> list[Prompt]:
    """Split on ``|`` and parse each part; an empty prompt is a ``UserError``."""
    if not spec or not spec.strip():
        raise UserError("the prompt is empty: say what to paint, e.g. 'a forest rendered in low poly'")
    prompts = [parse_one(p) for p in spec.split("|") if p.strip()]
    if not prompts:
        raise UserError("the prompt is empty: say what to paint, e.g. 'a forest rendered in low poly'")
    if all(p.weight == 0 for p in prompts):
        raise UserError("every prompt has weight 0: give at least one a non-zero weight")
    return prompts
