"""Banned words and rules, matched against what people ask the bot to paint (pure: no Discord).

A text and every entry are normalised the same way before they meet (``normalise``): format
characters removed (zero-width space/joiners U+200B..U+200D, word joiner U+2060, U+FEFF, the soft
hyphen U+00AD and every other Unicode ``Cf`` character), NFKC (full-width ``ｂａｄ`` and ligatures
become ``bad``), casefolded, and runs of whitespace made one space. A plain entry matches as a whole
word (or words): not inside a longer run of letters and digits (an underscore separates words, so
``bad_thing`` has ``bad`` in it, and ``badge`` does not). An entry ``re:PATTERN`` is a regular
expression searched in the normalised text (case-insensitive; the ``regex`` module's syntax, a
superset of ``re``'s). A regex gets ``REGEX_TIMEOUT_S`` per text: one that runs longer (catastrophic
backtracking) counts as a match, so a bad rule refuses rather than lets through, and says so in the log.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import regex

log = logging.getLogger(__name__)

REGEX_PREFIX = "re:"
REGEX_TIMEOUT_S = 0.1  # per regex and text; prompts are short ([limits] max_prompt_chars)
_EDGE = r"[^\W_]"  # a letter or digit: what a whole word may not touch


def normalise(text: str) -> str:
    """``text`` as it is compared: no format characters, NFKC, casefolded, single spaces."""
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(text.split())


def entry_key(entry: str) -> str:
    """The form an entry is stored and compared in: a word normalised, a ``re:`` rule as written
    (without surrounding space). ``Bad`` and ``ｂａｄ`` are one entry."""
    entry = entry.strip()
    return entry if entry.startswith(REGEX_PREFIX) else normalise(entry)


@dataclass(frozen=True)
class Rule:
    """One banned entry as written, where it comes from (for the log: ``config``, ``moderators``)."""

    entry: str
    source: str = "config"

    @property
    def kind(self) -> Literal["word", "regex"]:
        return "regex" if self.entry.startswith(REGEX_PREFIX) else "word"


def check_entry(entry: str) -> str:
    """``entry``'s key (``entry_key``), or ``ValueError`` with a line naming it: an empty word, or a
    ``re:`` pattern that does not compile."""
    key = entry_key(entry)
    if key.startswith(REGEX_PREFIX):
        _compile(key)
    elif not key:
        raise ValueError(f"{entry!r}: an empty word bans nothing")
    return key


def _compile(entry: str) -> regex.Pattern[str]:
    pattern = entry.removeprefix(REGEX_PREFIX)
    if not pattern.strip():
        raise ValueError(f"{entry!r}: an empty regular expression would ban every prompt")
    try:
        return regex.compile(pattern, regex.IGNORECASE)
    except regex.error as e:
        raise ValueError(f"{entry!r}: not a valid regular expression ({e})") from None


class WordFilter:
    """A set of rules compiled once: the words into one pattern, each regex on its own."""

    def __init__(self, rules: Iterable[Rule]) -> None:
        self._words: dict[str, Rule] = {}
        self._regexes: list[tuple[regex.Pattern[str], Rule]] = []
        for rule in rules:
            key = check_entry(rule.entry)
            if rule.kind == "regex":
                self._regexes.append((_compile(key), rule))
            else:
                self._words.setdefault(key, rule)
        self._pattern: re.Pattern[str] | None = None
        if self._words:
            words = sorted(self._words, key=len, reverse=True)  # the longest of overlapping entries wins
            alternatives = "|".join(r"\s+".join(map(re.escape, w.split(" "))) for w in words)
            self._pattern = re.compile(rf"(?<!{_EDGE})(?:{alternatives})(?!{_EDGE})")

    def __len__(self) -> int:
        return len(self._words) + len(self._regexes)

    def match(self, text: str) -> Rule | None:
        """The first rule ``text`` breaks, or None."""
        norm = normalise(text)
        if self._pattern is not None and (m := self._pattern.search(norm)):
            return self._words[" ".join(m.group(0).split())]
        for pattern, rule in self._regexes:
            try:
                if pattern.search(norm, timeout=REGEX_TIMEOUT_S):
                    return rule
            except TimeoutError:
                log.warning("banned rule %r took longer than %g s on a prompt and counts as a match; "
                            "make it simpler (nested repeats such as (a|aa)+ backtrack)", rule.entry,
                            REGEX_TIMEOUT_S)
                return rule
        return None
