"""Discord's length limits, and cutting or splitting a text to fit them.

Discord refuses a message, choice or label that is too long, and the person then sees nothing or
"something went wrong": whatever the bot sends that holds text it does not control (a prompt,
a server's custom emoji, a refusal repeating the input) goes through ``cut`` or ``split``.
"""

from __future__ import annotations

CONTENT = 2000  # a message's content
EMBED_DESCRIPTION = 4096
EMBED_TITLE = 256
CHOICE = 100  # an application command choice's name, and its value
MODAL_TITLE = 45
BUTTON_LABEL = 80
THREAD_NAME = 100
ELLIPSIS = "…"


def cut(text: str, limit: int = CONTENT) -> str:
    """``text`` if it fits in ``limit`` characters, else its start and "…" (``limit`` characters in all)."""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(ELLIPSIS))] + ELLIPSIS[: limit]


def split(text: str, limit: int = CONTENT) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, each one message: broken at a blank line
    where possible, else at a line end, a space, or anywhere. Nothing is lost except the whitespace
    at a break."""
    pieces: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        head = rest[:limit + 1]
        at = next((i for sep in ("\n\n", "\n", " ") if (i := head.rfind(sep)) > 0), limit)
        pieces.append(rest[:at].rstrip())
        rest = rest[at:].lstrip()
    if rest or not pieces:
        pieces.append(rest)
    return pieces
