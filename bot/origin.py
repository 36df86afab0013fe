"""Where a job came from in Discord and where its answers go: the bot's typed ``Job.origin``.

The queue stores a job's origin as opaque JSON and never reads it; this model is the bot's only
view of it. ``submit`` writes one, ``delivery`` reads it again at each event (the stored copy
holds the annotations made since), and the keys double as the queue's lookup keys
(``queue.find(result_message_id=...)``).

``version`` lets a later bot change the layout: rows written before it existed are version 1.
A stored origin that does not validate (another version's, a damaged row) is read like the
queue reads a job it cannot understand: what still validates is kept, the rest is dropped with
one warning, so the job's messages are found where possible and nothing raises.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

log = logging.getLogger(__name__)

INTERACTION_TOKEN = "interaction_token"  # a short-lived secret: the queue forgets it (``forget_after``)
TOKEN_EXPIRES_S = 15 * 60  # Discord accepts an interaction token for 15 minutes; the queue forgets it then
TOKEN_MARGIN_S = 60  # the bot stops using a token this long before it expires (a request in flight)


def token_usable(created_at: float | None, now: float) -> bool:
    """Whether a token made at ``created_at`` may still be used (with the margin)."""
    return created_at is not None and now - created_at <= TOKEN_EXPIRES_S - TOKEN_MARGIN_S
_warned: set[str] = set()  # jobs whose unreadable origin was logged already


class Origin(BaseModel):
    """A job's Discord coordinates. Every field may be missing: gestures have no interaction,
    a job may have no thread, and ids are learned as messages get posted."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    guild_id: int | None = None
    channel_id: int | None = None  # where it was asked
    user_id: int | None = None  # who asked
    note: str | None = None  # a line shown under the status (e.g. "made a collage of 2 images")
    # the status message (the deferred interaction response, or a reply to the gesture)
    status_message_id: int | None = None
    status_channel_id: int | None = None
    thread_id: int | None = None  # where progress and results go; None = the channel
    # a slash command's interaction: its webhook is the last fallback while the token is fresh
    interaction_token: str | None = None
    application_id: int | None = None
    interaction_at: float | None = None  # time.time() when it was created
    # a gesture's message and what it was a gesture on
    reply_to: int | None = None
    rerun_of: str | None = None  # job id
    variation_of: str | None = None  # job id
    outpaint_of: str | None = None  # job id (a zoom-out or pan button)
    upscale_of: str | None = None  # job id (the Upscale and U buttons)
    candidate: int | None = None  # which candidate of that job's grid a U or V button named
    timelapse: bool | None = None  # True: post the timelapse with the result (/imagine timelapse:True)
    # learned while delivering
    progress_message_id: int | None = None
    progress_channel_id: int | None = None
    result_message_id: int | None = None
    result_channel_id: int | None = None
    mask_message_id: int | None = None

    def stored(self) -> dict[str, Any]:
        """The JSON object the queue keeps (unset keys left out; ``version`` always in)."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def changes(cls, **keys: Any) -> dict[str, Any]:
        """Validated keys for ``queue.annotate``: a typo or a wrong type raises here, not later."""
        return cls.model_validate(keys).model_dump(mode="json", include=set(keys))

    @classmethod
    def read(cls, raw: object, job_id: str = "?") -> Origin:
        """The stored origin of a job; never raises (see the module docstring)."""
        if isinstance(raw, Origin):
            return raw
        if not isinstance(raw, dict):
            log.warning("job %s: its origin is not a JSON object; it cannot be delivered", job_id)
            return cls()
        try:
            return cls.model_validate(raw)
        except ValidationError as e:
            bad = {str(err["loc"][0]) for err in e.errors() if err["loc"]}
            if job_id not in _warned and len(_warned) < 10_000:  # delivery reads it at every event
                _warned.add(job_id)
                log.warning("job %s: origin saved by another version, keeping what can be read (dropped: %s)",
                            job_id, ", ".join(sorted(bad)) or "everything")
        kept = {k: v for k, v in raw.items() if k not in bad and k != "version"}
        try:
            return cls.model_validate(kept)
        except ValidationError:
            return cls()
