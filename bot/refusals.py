"""How many requests the bot refused, by kind: the numbers ``/metrics`` exports (``vqgan_refusals_total``).

One ``Refusals`` per bot (``bot.refusals``). A refusal is a request to paint, or to act on a job (cancel,
the buttons), that the bot said no to; each is counted once, where it is answered: ``bot.replies.refuse`` /
``counted`` take the ``UserError`` that refused, and ``refusal_kind`` names its kind (an error's own
``kind``, such as ``bot.access.Refused``'s or ``bot.moderation.Blocked``'s, else its engine class). The
answers of the settings-like commands (/moderation, /settings, /style, /usage, /gallery) pass the text
only and are not counted. Kinds come from the short fixed set ``REFUSAL_KINDS``; reading never blocks.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from engine import BadImage, ModelsUnavailable, NotAllowed, OverQuota, QueueFull, StorageError, UserError

MODERATION = "moderation"  # a prompt broke a banned word or rule
# Why the bot said no: a person, place or job not theirs; the per-person or total pending limit; the request
# itself (too long, too big, malformed); an unreadable or oversized image; models not available; the job
# store; a banned prompt; today's GPU time used up (``[limits] relax = false``); anything else.
REFUSAL_KINDS = ("not_allowed", "pending", "input", "bad_image", "models", "storage", MODERATION, "quota", "other")
_BY_CLASS: tuple[tuple[type[UserError], str], ...] = (
    (QueueFull, "pending"), (NotAllowed, "not_allowed"), (BadImage, "bad_image"), (ModelsUnavailable, "models"),
    (StorageError, "storage"), (OverQuota, "quota"),
)


def refusal_kind(error: BaseException) -> str:
    """Which of ``REFUSAL_KINDS`` a refusal is: the error's own ``kind``, else by the engine's error class;
    any other one-line error is about the person's input."""
    kind = getattr(error, "kind", None)
    if isinstance(kind, str):
        return kind if kind in REFUSAL_KINDS else "other"
    return next((k for cls, k in _BY_CLASS if isinstance(error, cls)), "input")


class Refusals:
    """Counts by kind, from the bot's start."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()

    def count(self, kind: str) -> None:
        """One refusal of ``kind`` (one of ``REFUSAL_KINDS``; anything else counts as "other")."""
        self._counts[kind if kind in REFUSAL_KINDS else "other"] += 1

    def counts(self) -> dict[str, int]:
        """Each kind's count so far (a copy)."""
        return dict(self._counts)

    def __getitem__(self, kind: str) -> int:
        return self._counts[kind]


def count_refusal(client: Any, kind: str) -> None:
    """``Refusals.count`` of ``client``'s (a ``VQGANBot``'s ``refusals``), if it has one."""
    refusals = getattr(client, "refusals", None)
    if isinstance(refusals, Refusals):
        refusals.count(kind)
