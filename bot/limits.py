"""Discord's length limits, and ``fit`` / ``split``: a text cut or broken to fit one of them.

Discord refuses a whole message (400 Invalid Form Body), choice or label when one of its texts is a
character too long, and the person then sees nothing or "something went wrong". What goes into the
bot's messages comes partly from people, servers and workers (prompts, custom emoji, notes, reasons, a
refusal repeating the input), so every such text is cut before it is sent: a long note costs its tail,
never the message. Lengths are counted in UTF-16 code units, which is never less than Discord's count,
so a text that fits here fits there.
"""

from __future__ import annotations

CONTENT = 2000  # a message's content
EMBED_TITLE = 256
EMBED_DESCRIPTION = 4096
EMBED_FIELD_NAME = 256
EMBED_FIELD_VALUE = 1024
EMBED_FOOTER = 2048
EMBED_AUTHOR = 256
EMBED_TOTAL = 6000  # all the texts of all the embeds of one message
THREAD_NAME = 100
BUTTON_LABEL = 80
MODAL_TITLE = 45
CHOICE = 100  # an application command choice's name, and its value
ELLIPSIS = "…"


def length(text: str) -> int:
    """``text``'s length as Discord may count it at most (UTF-16 code units)."""
    return len(text) + sum(1 for ch in text if ord(ch) > 0xFFFF)


def fit(text: str, limit: int = CONTENT, mark: str = ELLIPSIS) -> str:
    """``text`` if it fits in ``limit``, else cut between characters (trailing space dropped) with
    ``mark`` at the end, the whole within ``limit``."""
    if length(text) <= limit:
        return text
    if length(mark) > limit:
        mark = ""
    return _head(text, limit - length(mark)).rstrip() + mark


def split(text: str, limit: int = CONTENT) -> list[str]:
    """``text`` in pieces that each fit ``limit``, each one message: broken at a blank line where
    possible, else at a line end, a space, or anywhere. Nothing is lost except the whitespace at a break."""
    pieces: list[str] = []
    rest = text.strip()
    while length(rest) > limit:
        head = _head(rest, limit + 1)
        at = next((i for sep in ("\n\n", "\n", " ") if (i := head.rfind(sep)) > 0), len(_head(rest, limit)))
        pieces.append(rest[:at].rstrip())
        rest = rest[at:].lstrip()
    if rest or not pieces:
        pieces.append(rest)
    return pieces


def _head(text: str, room: int) -> str:
    """The longest start of ``text`` within ``room`` UTF-16 units (never half a character)."""
    used = 0
    for i, ch in enumerate(text):
        used += 2 if ord(ch) > 0xFFFF else 1
        if used > room:
            return text[:i]
    return text
