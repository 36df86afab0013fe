"""Prompt sweeps: ``a {red, blue, golden} car`` is three prompts, one job each.

Groups nest (``{red, {dark, light} blue}``) and several groups multiply; the order is the natural
one, the first group varying slowest. Commas separate choices only inside braces. The number of
prompts is counted from the parsed groups before anything is expanded, so ``{a,b}{c,d}{e,f}...``
is refused by its count, never built. The braces cover the whole text, parameters included
(``--ar {1:1, 16:9}``): each prompt's parameters are read after the sweep is expanded.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass

from engine.errors import UserError

MAX_DEPTH = 8
"""Braces inside braces at most this deep (a sweep needs two or three; deeper is a typo or an attack)."""

HOWTO = "a sweep is written like a {red, blue} car"

# A piece of text is a list of parts: literal strings and groups (each a list of choices, each a piece).
Piece = list["str | Group"]


@dataclass
class Group:
    choices: list[Piece]


def _parse(text: str) -> Piece:
    """The text as literal strings and groups; a brace without its partner is one clear line."""
    root: Piece = []
    stack: list[tuple[Group, Piece, int]] = []  # open groups: the group, its current choice, where it opened
    current = root
    literal: list[str] = []

    def flush() -> None:
        if literal:
            current.append("".join(literal))
            literal.clear()

    for i, c in enumerate(text):
        if c == "{":
            if len(stack) >= MAX_DEPTH:
                raise UserError(f"sweeps nest at most {MAX_DEPTH} braces deep; {HOWTO}")
            flush()
            group = Group([])
            current.append(group)
            choice: Piece = []
            group.choices.append(choice)
            stack.append((group, choice, i))
            current = choice
        elif c == "}":
            if not stack:
                raise UserError(f"the '}}' at character {i + 1} of the prompt closes no '{{'; {HOWTO}")
            flush()
            group, _, opened = stack.pop()
            if len(group.choices) == 1 and not any(_visible(p) for p in group.choices[0]):
                raise UserError(f"the '{{}}' at character {opened + 1} of the prompt has no choices; {HOWTO}")
            current = stack[-1][1] if stack else root
        elif c == "," and stack:
            flush()
            group = stack[-1][0]
            choice = []
            group.choices.append(choice)
            stack[-1] = (group, choice, stack[-1][2])
            current = choice
        else:
            literal.append(c)
    if stack:
        raise UserError(f"the '{{' at character {stack[-1][2] + 1} of the prompt is never closed; {HOWTO}")
    flush()
    return root


def _visible(part: str | Group) -> bool:
    return isinstance(part, Group) or bool(part.strip())


def _count(piece: Piece) -> int:
    return math.prod(sum(_count(c) for c in p.choices) for p in piece if isinstance(p, Group))


def _expand(piece: Piece) -> Iterator[str]:
    """Every text of ``piece``, the first group varying slowest (recursive only into nested braces)."""
    options = [[p] if isinstance(p, str) else [t.strip() for c in p.choices for t in _expand(c)] for p in piece]
    for combo in itertools.product(*options):
        yield "".join(combo)


def is_sweep(text: str) -> bool:
    """Whether the text has braces at all (a sweep, or a mistake to refuse)."""
    return "{" in text or "}" in text


def sweep_count(text: str) -> int:
    """How many prompts the text stands for (1 without braces); ``UserError`` if its braces do not pair up."""
    return _count(_parse(text)) if is_sweep(text) else 1


def expand(text: str, limit: int) -> list[str]:
    """The prompts of a sweep, in order; refused in one line when there would be more than ``limit``."""
    if not is_sweep(text):
        return [text]
    piece = _parse(text)
    n = _count(piece)
    if n > limit:
        raise UserError(f"this sweep makes {_many(n)} prompts; at most {limit} jobs come from one prompt")
    return [re.sub(r"[ \t]{2,}", " ", t).strip() for t in _expand(piece)]


def _many(n: int) -> str:
    return f"{n}" if n < 10**6 else "more than a million"
