"""Prompt syntax: ``"text:weight:stop|other text:-0.5"``; a story is parts joined by ``^``.

A story (``"a forest ^ a forest on fire ^ ashes"``) moves to the next part every ``steps / N``
steps (or every ``story_every`` steps); each part is a whole prompt in the syntax above.

A weight is a float (negative pushes the image away from the text); ``stop`` is a
distance below which a prompt stops pulling (e.g. ``-inf`` = never). Colons inside the
text are kept: only trailing fields that parse as numbers are taken as weight/stop,
so ``"http://x"`` stays one text.

Weights and stops must fit what float32 tensors survive: ``1e39`` is finite in Python but
infinite on the GPU (the picture comes out black), and a stop of ``inf`` turns z into NaN.
Spherical distances lie in [0, pi^2/2], so no sensible stop is anywhere near the limits.
"""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass

from engine.config import MAX_WEIGHT
from engine.errors import UserError, quoted

# Characters that draw nothing although they are not format characters: Hangul fillers, the blank
# Braille pattern, the combining grapheme joiner and variation selectors.
_BLANK = frozenset("\u115f\u1160\u3164\uffa0\u2800\u034f\u180b\u180c\u180d\u180f"
                   + "".join(map(chr, range(0xFE00, 0xFE10))))


EMPTY_PROMPT = "the prompt is empty: say what to paint, e.g. 'a forest rendered in low poly'"


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
    if not visible(text):
        raise UserError(f"prompt part {quoted(spec)} has no text")
    weight = nums[0] if nums else 1.0
    stop = nums[1] if len(nums) > 1 else -math.inf
    if not abs(weight) <= MAX_WEIGHT:
        raise UserError(f"prompt weight in {quoted(spec.strip())} must be between {-MAX_WEIGHT:g} and {MAX_WEIGHT:g}")
    if stop != -math.inf and not abs(stop) <= MAX_WEIGHT:  # -inf: never stop (the default)
        raise UserError(f"prompt stop in {quoted(spec.strip())} must be between {-MAX_WEIGHT:g} and {MAX_WEIGHT:g}")
    return Prompt(text, weight, stop)


def visible(text: str) -> bool:
    """Whether ``text`` shows anything: a character that is not whitespace, not a format or control
    character (Unicode categories Cf and Cc: zero-width spaces and joiners, direction marks, ...) and
    not one of the few blank letters. A prompt of zero-width spaces looks empty and is empty."""
    return any(not (c.isspace() or unicodedata.category(c) in ("Cf", "Cc") or c in _BLANK) for c in text)


def check_text(text: str, what: str = "the prompt") -> None:
    """Refuse text that cannot be written as UTF-8 (a lone surrogate, e.g. from a non-UTF-8 terminal):
    it would pass everything else and fail only when the PNG is written, after the whole run."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise UserError(f"{what} has a character that is not valid text at position {e.start}: "
                        "retype it or check the terminal's encoding") from None


def parse_prompts(spec: str) -> list[Prompt]:
    """Split on ``|`` and parse each part; an empty prompt is a ``UserError``."""
    if not visible(spec):
        raise UserError(EMPTY_PROMPT)
    check_text(spec)
    prompts = [parse_one(p) for p in spec.split("|") if visible(p)]
    if not prompts:
        raise UserError(EMPTY_PROMPT)
    if all(p.weight == 0 for p in prompts):
        raise UserError("every prompt has weight 0: give at least one a non-zero weight")
    return prompts


STORY_SEP = "^"


def parse_story(text: str) -> list[str]:
    """The parts of a story prompt (split on ``^``), each checked as a prompt; one part = no story."""
    if not visible(text):
        raise UserError(EMPTY_PROMPT)
    parts = [p.strip() for p in text.split(STORY_SEP)]
    for i, part in enumerate(parts, 1):
        if not visible(part):
            raise UserError(f"story part {i} of {len(parts)} is empty: write a prompt between each '^'")
        parse_prompts(part)
    return parts


def part_at(step: int, steps: int, n_parts: int, story_every: int | None = None) -> int:
    """The story part (0-based) active while computing step ``step`` (0-based) of ``steps``.

    Every ``story_every`` steps, or every ``steps // n_parts`` steps (at least 1), the next part;
    the last part stays to the end.
    """
    if n_parts <= 1:
        return 0
    every = story_every if story_every else max(1, steps // n_parts)
    return min(n_parts - 1, step // every)
