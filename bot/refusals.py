"""How many requests the bot refused, by kind: the numbers ``/metrics`` exports.

One ``Refusals`` per bot (``bot.refusals``). A refusal of a kind is counted where it is decided, through
``count(kind)``; ``MODERATION`` is the banned-prompt kind (``bot.moderation``). Reading never blocks.
"""

from __future__ import annotations

from collections import Counter

MODERATION = "moderation"  # a prompt broke a banned word or rule


class Refusals:
    """Counts by kind, from the bot's start."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def count(self, kind: str) -> None:
        self._counts[kind] += 1

    def counts(self) -> dict[str, int]:
        """Each kind's count so far (a copy)."""
        return dict(self._counts)

    def __getitem__(self, kind: str) -> int:
        return self._counts[kind]
