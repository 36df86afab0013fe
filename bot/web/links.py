"""The gallery's links: signed (HMAC-SHA256), expiring, and naming exactly whose pictures they show.

A link's token is ``<scope>.<id>.<expires>.<signature>``: scope ``u`` (a person's results: ``id`` is their
user id), ``g`` (a server's results, for its moderators) or ``s`` (a server's status page); ``expires`` in
Unix seconds; the signature covers all three, so changing any of them (another user's id, a later expiry,
a user link turned into a server link) makes a token that does not verify. Tokens are checked with
``hmac.compare_digest``; nothing is stored, so a link cannot be revoked before it expires except by
changing ``gallery.secret`` (which revokes them all).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time
from dataclasses import dataclass
from typing import Literal

Kind = Literal["u", "g", "s"]
TOKEN = re.compile(r"(?P<kind>[ugs])\.(?P<subject>[0-9]{1,20})\.(?P<expires>[0-9]{1,12})\.(?P<sig>[A-Za-z0-9_-]{43})")
KINDS: dict[str, Kind] = {"u": "u", "g": "g", "s": "s"}


@dataclass(frozen=True)
class Scope:
    """What a verified token lets its holder see."""

    kind: Kind
    subject: int  # the user id (``u``) or the server id (``g``, ``s``)
    expires: int


class Links:
    """Makes and checks tokens with one secret."""

    def __init__(self, secret: str, ttl_s: float) -> None:
        if not secret:
            raise ValueError("the gallery needs a secret")
        self._key = secret.encode()
        self.ttl_s = ttl_s

    def _sign(self, kind: str, subject: int, expires: int) -> str:
        mac = hmac.new(self._key, f"vqgan-gallery/1/{kind}/{subject}/{expires}".encode(), hashlib.sha256)
        return base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()

    def token(self, kind: Kind, subject: int, now: float | None = None) -> tuple[str, int]:
        """A token for ``kind``/``subject`` and when it expires (Unix seconds)."""
        expires = int((time.time() if now is None else now) + self.ttl_s)
        return f"{kind}.{subject}.{expires}.{self._sign(kind, subject, expires)}", expires

    def verify(self, token: str, now: float | None = None) -> Scope | None:
        """The scope of a well-formed, unaltered, unexpired token; None for any other."""
        m = TOKEN.fullmatch(token)
        if m is None:
            return None
        kind, subject, expires = KINDS[m["kind"]], int(m["subject"]), int(m["expires"])
        if not hmac.compare_digest(self._sign(kind, subject, expires), m["sig"]):
            return None
        if expires < (time.time() if now is None else now):
            return None
        return Scope(kind, subject, expires)


def url(base: str, token: str) -> str:
    """The page a token opens, under the gallery's public address."""
    return f"{base.rstrip('/')}/gallery/{token}"
