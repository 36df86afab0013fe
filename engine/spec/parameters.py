"""Midjourney-style parameters at the end of a prompt: ``a lighthouse --ar 16:9 --no people, text --seed 7``.

One parser for the command line and the bot. Parameters start at the first ``--name`` that stands
after a space (or at the start; a dash that a phone turned into ``—`` counts too) and run to the end:
words after a parameter are its value. The option or flag of the same name (a CLI flag, a slash
command's option) wins over the parameter. Each request stores the prompt without them
(``Request.prompt``), the parameters as typed (``Request.parameters``) and what they set.

``plan`` puts this together with sweeps (``engine.spec.sweeps``) and ``--repeat``: one ``Planned``
per job, in order, counted and capped before anything is built.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from engine.config import MAX_WEIGHT, LimitsConfig
from engine.errors import UserError, quoted
from engine.spec.prompts import check_text, visible
from engine.spec.request import MAX_SEED, Request
from engine.spec.sweeps import expand

KNOWN: dict[str, str] = {  # name -> how it is written, for the one line that names them all
    "ar": "--ar W:H", "seed": "--seed N", "steps": "--steps N", "no": "--no WORDS", "iw": "--iw W",
    "grid": "--grid N", "model": "--model NAME", "clip": "--clip NAME", "tile": "--tile", "tile-x": "--tile-x",
    "style": "--style NAME", "repeat": "--repeat N",
}
_START = re.compile(r"(?:(?<=\s)|^)(?:--|[—–])(?=[A-Za-z])")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_WHOLE = re.compile(r"\d{1,12}")
_RATIO = re.compile(r"(\d{1,5})\s*:\s*(\d{1,5})")


def known_line() -> str:
    return "parameters: " + ", ".join(KNOWN.values())


def _refuse(problem: str) -> UserError:
    return UserError(f"{problem}; {known_line()}")


@dataclass(frozen=True)
class Parameters:
    """A prompt split from its parameters; ``None`` / empty = not given."""

    prompt: str
    text: str = ""  # the parameters as typed (spaces tidied), e.g. "--ar 16:9 --seed 7"
    aspect: tuple[int, int] | None = None
    seed: int | None = None
    steps: int | None = None
    negative: tuple[str, ...] = ()
    image_weight: float | None = None
    grid: int | None = None
    model: str | None = None
    clip: str | None = None
    tile: Literal["x", "xy"] | None = None
    style: str | None = None
    repeat: int | None = None

    def fields(self) -> dict[str, Any]:
        """The ``Request`` fields they set directly (the size, models, style and image weight are each
        front end's to apply). ``--grid`` and ``--tile`` need a version whose requests have those."""
        out: dict[str, Any] = {"seed": self.seed, "steps": self.steps, "negative": self.negative or None,
                               "parameters": self.text or None}
        for name, value in (("grid", self.grid), ("tile", self.tile)):
            if value is not None:
                if name not in Request.model_fields:
                    raise UserError(f"--{name.replace('_', '-')}: {'grids' if name == 'grid' else 'tiles'} "
                                    "are not available in this version")
                out[name] = value
        return out


def split_parameters(text: str) -> Parameters:
    """The prompt and the parameters at its end; an unknown parameter, a malformed value or a
    parameter given twice is one line that names the known ones."""
    start = _START.search(text)
    if start is None:
        return Parameters(prompt=text.strip())
    prompt, rest = text[: start.start()].strip(), text[start.start():]
    marks = list(_START.finditer(rest))
    values: dict[str, str] = {}
    typed: list[str] = []
    for i, m in enumerate(marks):
        segment = rest[m.end(): marks[i + 1].start() if i + 1 < len(marks) else len(rest)]
        name_m = _NAME.match(segment)
        assert name_m is not None  # _START looks ahead for a letter
        name, value = name_m.group().lower(), " ".join(segment[name_m.end():].split())
        if name not in KNOWN:
            raise _refuse(f"unknown parameter {quoted('--' + name_m.group())}")
        if name in values:
            raise _refuse(f"--{name} is given twice")
        values[name] = value
        typed.append(f"--{name} {value}".strip())
    parsed: dict[str, Any] = {k: _VALUES[k](v) for k, v in values.items()}
    if "tile" in parsed and "tile-x" in parsed:
        raise _refuse("give --tile or --tile-x, not both")
    tile: Literal["x", "xy"] | None = "xy" if parsed.pop("tile", None) else "x" if parsed.pop("tile-x", None) else None
    joined = " ".join(typed)
    check_text(joined, "the parameters")
    return Parameters(prompt=prompt, text=joined, tile=tile, **{_FIELD.get(k, k): v for k, v in parsed.items()})


def _whole(name: str, low: int, high: int | None = None) -> Any:
    def parse(value: str) -> int:
        if not _WHOLE.fullmatch(value) or int(value) < low or (high is not None and int(value) > high):
            span = f"from {low} to {high}" if high is not None else f"{low} or more"
            raise _refuse(f"--{name} {quoted(value)}: give a whole number, {span}")
        return int(value)
    return parse


def _ratio(value: str) -> tuple[int, int]:
    m = _RATIO.fullmatch(value)
    if not m or int(m.group(1)) < 1 or int(m.group(2)) < 1:
        raise _refuse(f"--ar {quoted(value)}: give width:height in whole numbers, e.g. --ar 16:9")
    w, h = int(m.group(1)), int(m.group(2))
    if max(w, h) > 8 * min(w, h):
        raise _refuse(f"--ar {quoted(value)}: at most 8:1 either way")
    return w, h


def _negatives(value: str) -> tuple[str, ...]:
    words = tuple(w.strip() for w in value.split(","))
    if not value or not all(visible(w) for w in words):
        raise _refuse(f"--no {quoted(value)}: give what to keep out, commas between, e.g. --no people, text")
    return words


def _weight(value: str) -> float:
    try:
        w = float(value)
    except ValueError:
        w = math.nan
    if not abs(w) <= MAX_WEIGHT or not re.fullmatch(r"[-+]?[\d.]+(e[-+]?\d+)?", value, re.I):
        raise _refuse(f"--iw {quoted(value)}: give a number from {-MAX_WEIGHT:g} to {MAX_WEIGHT:g}, e.g. --iw 0.5")
    return w


def _word(name: str) -> Any:
    def parse(value: str) -> str:
        if not value or len(value.split()) != 1:
            raise _refuse(f"--{name} {quoted(value)}: give one name, e.g. {KNOWN[name]}")
        return value
    return parse


def _words(name: str) -> Any:
    def parse(value: str) -> str:
        if not visible(value):
            raise _refuse(f"--{name} needs a name, e.g. {KNOWN[name]}")
        return value
    return parse


def _flag(name: str) -> Any:
    def parse(value: str) -> bool:
        if value:
            raise _refuse(f"--{name} takes no value (got {quoted(value)})")
        return True
    return parse


_VALUES: dict[str, Any] = {
    "ar": _ratio, "seed": _whole("seed", 0, MAX_SEED), "steps": _whole("steps", 1), "no": _negatives,
    "iw": _weight, "grid": _whole("grid", 1), "model": _word("model"), "clip": _word("clip"),
    "tile": _flag("tile"), "tile-x": _flag("tile-x"), "style": _words("style"), "repeat": _whole("repeat", 1),
}
_FIELD = {"ar": "aspect", "no": "negative", "iw": "image_weight"}


@dataclass(frozen=True)
class Planned:
    """One job of what a person typed: its prompt and parameters, and which of its ``--repeat`` it is
    (``index`` 0, 1, ...: its seed is the first one plus ``index``)."""

    params: Parameters
    index: int = 0
    of: int = field(default=1, compare=False)  # how many jobs the whole text makes

    def seed(self, base: int) -> int:
        """Consecutive seeds from ``base`` (wrapping past the largest seed; ``base`` itself as given, so
        that a seed out of range is refused, not wrapped)."""
        return base if self.index == 0 else (base + self.index) % (MAX_SEED + 1)


def plan(text: str, limits: LimitsConfig) -> list[Planned]:
    """One ``Planned`` per job: each prompt of a sweep, ``--repeat`` times, in that order; at most
    ``limits.max_repeat`` in all (counted before anything is built)."""
    most = limits.max_repeat
    jobs: list[Planned] = []
    for variant in expand(text, most):
        params = split_parameters(variant)
        repeat = params.repeat or 1
        if repeat > most:
            raise UserError(f"--repeat must be from 1 to {most} (got {repeat})")
        jobs += [Planned(params, i) for i in range(repeat)]
        if len(jobs) > most:
            raise UserError(f"this prompt makes more than {most} jobs (sweeps x --repeat); at most {most} "
                            "come from one prompt")
    return [Planned(j.params, j.index, len(jobs)) for j in jobs]
